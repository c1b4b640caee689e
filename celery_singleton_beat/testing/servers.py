"""Real Redis servers for tests, benchmarks and demos: started on free ports, always stopped.

Each :class:`RedisServer` is a ``redis-server`` process with no persistence that a test
can kill, pause (SIGSTOP), resume, restart (it comes back empty on the same port) or
pause for clients (``CLIENT PAUSE``). A :class:`SentinelGroup` is a primary with
replicas and three Sentinels watching it, as a Sentinel deployment runs them. A
:class:`RedisClusterServers` is a Redis Cluster of such processes (primaries with a
replica each) whose primaries a test can kill and see replaced by their replicas.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, NamedTuple

import redis
import redis.cluster

from celery_singleton_beat.testing.proxy import TcpProxy


def redis_server_binary() -> str:
    """The ``redis-server`` to use; a missing one is a test failure, never a skip."""
    binary = os.environ.get("REDIS_SERVER", "redis-server")
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(
            f"{binary!r} was not found on PATH. The tests start their own Redis masters: "
            f"install it (Debian: apt-get install redis-server) or run 'make test', "
            f"which installs it when running as root."
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TlsFiles(NamedTuple):
    """A certificate authority and a server certificate for 127.0.0.1 it signed."""

    ca: str
    cert: str
    key: str

    @classmethod
    def make(cls, directory: str) -> TlsFiles:
        """New files in ``directory`` (with the ``openssl`` command, valid one day)."""
        files = cls(*(os.path.join(directory, n) for n in ("ca.crt", "server.crt", "server.key")))
        ca_key, csr, ext = (os.path.join(directory, n) for n in ("ca.key", "server.csr", "ext"))
        with open(ext, "w") as out:
            out.write("subjectAltName=IP:127.0.0.1\n")
        for args in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out",
             files.ca, "-days", "1", "-subj", "/CN=test-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files.key, "-out", csr,
             "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", csr, "-CA", files.ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", files.cert, "-days", "1", "-extfile", ext],
        ):  # fmt: skip
            subprocess.run(["openssl", *args], check=True, capture_output=True)
        return files

    def server_arguments(self, port: int) -> list[str]:
        """A server's (or a Sentinel's) TLS options: TLS only, on ``port``, to replicas too."""
        return [
            "port 0", f"tls-port {port}", f"tls-cert-file {self.cert}",
            f"tls-key-file {self.key}", f"tls-ca-cert-file {self.ca}", "tls-auth-clients no",
            "tls-replication yes",
        ]  # fmt: skip

    @property
    def client_options(self) -> dict[str, Any]:
        """redis-py's options for a client of such a server."""
        return {"ssl": True, "ssl_ca_certs": self.ca}


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (with ``tls``: TLS only)."""

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        extra_args: tuple[str, ...] = (),
        tls: TlsFiles | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.extra_args = extra_args
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="singleton-beat-redis-")

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        tls = self.tls.client_options if self.tls else {}
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2, **tls
        )

    def arguments(self) -> list[str]:
        """The ``redis-server`` command line."""
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--logfile", os.path.join(self._dir, "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            for line in self.tls.server_arguments(self.port):
                key, value = line.split(" ", 1)
                args += [f"--{key}", value]
        return args + list(self.extra_args)

    def start(self) -> RedisServer:
        args = self.arguments()
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr
                error = stderr.read().decode() if stderr is not None else ""
                raise RuntimeError(f"redis-server on port {self.port} exited: {error}")
            with contextlib.suppress(redis.ConnectionError):
                if self.client().ping():
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 10 s")

    def kill(self) -> None:
        """SIGKILL the server and wait for it to go."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill and start again on the same port, empty."""
        self.kill()
        self.start()

    def client_pause(self, ms: int) -> None:
        """``CLIENT PAUSE ms``: clients are held without an answer for ``ms``."""
        self.client().client_pause(ms)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def redis_servers(count: int) -> Iterator[list[RedisServer]]:
    """``count`` independent masters, stopped at the end."""
    servers: list[RedisServer] = []
    try:
        for _ in range(count):
            servers.append(RedisServer().start())
        yield servers
    finally:
        for server in servers:
            server.stop()


class RedisSentinel(RedisServer):
    """A ``redis-server --sentinel`` watching one primary under a master name."""

    def __init__(
        self,
        primary_port: int,
        master_name: str,
        *,
        quorum: int,
        down_after_ms: int,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(password=password, tls=tls)
        self.primary_port = primary_port
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.myid = os.urandom(20).hex()
        self.known: list[str] = []
        """Config lines naming the other Sentinels and the replicas, so that the group is
        complete at start instead of after a few rounds of Sentinel's hello messages."""

    def arguments(self) -> list[str]:
        """A Sentinel's command line: its config file (which Sentinel rewrites) first."""
        config = os.path.join(self._dir, "sentinel.conf")
        name = self.master_name
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self._dir}",
            f"logfile {os.path.join(self._dir, 'sentinel.log')}",
            f"sentinel monitor {name} 127.0.0.1 {self.primary_port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} 5000",
            f"sentinel parallel-syncs {name} 1",
            f"sentinel myid {self.myid}",
            *self.known,
        ]
        if self.password:  # asked of clients, and given to the other Sentinels
            lines += [f"requirepass {self.password}", f"sentinel sentinel-pass {self.password}"]
        if self.tls:  # clients, the other Sentinels and the data servers over TLS only
            lines = [line for line in lines if not line.startswith("port ")]
            lines += self.tls.server_arguments(self.port)
        with open(config, "w") as out:
            out.write("\n".join(lines) + "\n")
        return [redis_server_binary(), config, "--sentinel"]

    def primary_address(self) -> tuple[str, int] | None:
        """Where this Sentinel says the primary is now (None when it does not answer)."""
        try:
            found: Any = self.client().sentinel_get_master_addr_by_name(self.master_name)
        except redis.RedisError:
            return None
        return (str(found[0]), int(found[1])) if found else None


#: A replica's first full copy starts at once (Redis 7 waits 5 s for more replicas).
_QUICK_SYNC = ("--repl-diskless-sync-delay", "0")


class SentinelGroup:
    """A primary, its replicas and three Sentinels (quorum 2) watching it, on free ports.

    :attr:`url` names the group as Celery names a Sentinel broker
    (``sentinel://h:p;sentinel://h:p;sentinel://h:p/0``), with ``master_name`` in
    :attr:`transport_options`. A test kills the primary (:meth:`primary`), provokes lag
    on a replica, and waits for the Sentinels to promote another (:meth:`wait_for_failover`).
    """

    master_name = "mymaster"

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        sentinel_password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.sentinel_password = sentinel_password
        self.tls = tls
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.down_after_ms = down_after_ms
        self.servers: list[RedisServer] = []
        """The data servers: the first primary, then its replicas (roles change on failover)."""
        self.sentinels: list[RedisSentinel] = []

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels) + "/0"

    @property
    def transport_options(self) -> dict[str, Any]:
        """Celery's transport options for the group (its master name, the Sentinels'
        password and TLS)."""
        options: dict[str, Any] = {"master_name": self.master_name}
        sentinels = dict(self.tls.client_options) if self.tls else {}
        if self.sentinel_password:
            sentinels["password"] = self.sentinel_password
        if sentinels:
            options["sentinel_kwargs"] = sentinels
        return options

    def start(self) -> SentinelGroup:
        primary = RedisServer(extra_args=_QUICK_SYNC, tls=self.tls).start()
        self.servers.append(primary)
        for _ in range(self.replica_count):
            follow = ("--replicaof", "127.0.0.1", str(primary.port))
            replica = RedisServer(extra_args=(*_QUICK_SYNC, *follow), tls=self.tls)
            self.servers.append(replica.start())
        for replica in self.servers[1:]:
            _wait(partial(_linked, replica), "replication")
        _wait(partial(_acknowledging, primary, self.replica_count), "acknowledgements")
        for _ in range(self.sentinel_count):
            self.sentinels.append(
                RedisSentinel(
                    primary.port, self.master_name, quorum=self.sentinel_count // 2 + 1,
                    down_after_ms=self.down_after_ms, password=self.sentinel_password,
                    tls=self.tls,
                )
            )  # fmt: skip
        for sentinel in self.sentinels:
            sentinel.known = [
                *(f"sentinel known-replica {self.master_name} 127.0.0.1 {r.port}"
                  for r in self.servers[1:]),
                *(f"sentinel known-sentinel {self.master_name} 127.0.0.1 {o.port} {o.myid}"
                  for o in self.sentinels if o is not sentinel),
            ]  # fmt: skip
            sentinel.start()
        _wait(self._watching, "the Sentinels to see the replicas and each other")
        return self

    def _watching(self) -> bool:
        for sentinel in self.sentinels:
            state: Any = sentinel.client().sentinel_master(self.master_name)
            if int(state["num-slaves"]) < self.replica_count:
                return False
            if int(state["num-other-sentinels"]) < self.sentinel_count - 1:
                return False
        return True

    def primary_port(self) -> int | None:
        """The primary's port as most Sentinels answer it."""
        ports = [a[1] for s in self.sentinels if (a := s.primary_address()) is not None]
        return max(set(ports), key=ports.count) if ports else None

    def primary(self) -> RedisServer:
        """The data server the Sentinels name as the primary now."""
        port = self.primary_port()
        return next(s for s in self.servers if s.port == port)

    def replicas(self) -> list[RedisServer]:
        """The other data servers."""
        port = self.primary_port()
        return [s for s in self.servers if s.port != port]

    def wait_for_failover(self, old: RedisServer, timeout: float = 30) -> RedisServer:
        """The server every Sentinel names as primary once none names ``old`` any more."""

        def moved() -> bool:
            ports = [s.primary_address() for s in self.sentinels]
            return all(p is not None and p[1] != old.port for p in ports)

        _wait(moved, f"the Sentinels to promote a replica of port {old.port}", timeout)
        return self.primary()

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()


@contextlib.contextmanager
def sentinel_group(
    replicas: int = 1,
    down_after_ms: int = 1000,
    sentinel_password: str | None = None,
    tls: TlsFiles | None = None,
) -> Iterator[SentinelGroup]:
    """A :class:`SentinelGroup`, started, and stopped at the end whatever happens."""
    group = SentinelGroup(
        replicas=replicas, down_after_ms=down_after_ms, sentinel_password=sentinel_password,
        tls=tls,
    )  # fmt: skip
    try:
        yield group.start()
    finally:
        group.stop()


def _linked(replica: RedisServer) -> bool:
    return bool(_info(replica).get("master_link_status") == "up")


def _acknowledging(primary: RedisServer, replicas: int) -> bool:
    """Whether every replica acknowledges a write (Redis 7 streams writes to a replica
    only after its first acknowledgement, up to a second after its first copy)."""
    pipe: Any = primary.client().pipeline(transaction=False)
    pipe.set("sentinel-group:probe", 1)
    pipe.delete("sentinel-group:probe")
    pipe.execute_command("WAIT", replicas, 100)
    return int(pipe.execute()[-1]) >= replicas


def _info(server: RedisServer) -> dict[str, Any]:
    try:
        return dict(server.client().info("replication"))
    except redis.RedisError:
        return {}


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if condition():
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class SilentServer(TcpProxy):
    """A TCP listener that accepts connections and never answers a byte: a
    :class:`~celery_singleton_beat.testing.proxy.TcpProxy` black hole from the start, with
    no server behind it (``close()`` drops its connections and stops listening)."""

    def __init__(self) -> None:
        super().__init__(target_port=0)  # never dialled: every connection is held
        self.black_hole()


class RedisClusterServers:
    """A Redis Cluster on 127.0.0.1: ``primaries`` primaries with ``replicas`` replicas each
    (``redis-server --cluster-enabled yes``), joined by ``redis-cli --cluster create``.

    ``node_timeout_ms`` is the cluster's ``cluster-node-timeout``: a primary unreachable
    for that long is failed over to its replica (about as long again for the vote). Every
    replica may be promoted whatever its replication lag
    (``cluster-replica-validity-factor 0``); everything else is Redis's default, including
    ``cluster-require-full-coverage yes``: while a primary is down and not yet replaced the
    whole cluster answers ``CLUSTERDOWN``.
    """

    def __init__(self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.replicas = replicas
        self.nodes = [
            RedisServer(extra_args=self._node_args()) for _ in range(primaries * (1 + replicas))
        ]

    def _node_args(self) -> tuple[str, ...]:
        return (
            "--cluster-enabled", "yes",
            "--cluster-port", str(free_port()),  # the bus port (Redis 7): else port + 10000
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
        )  # fmt: skip

    @property
    def url(self) -> str:
        """The cluster's URL as ``singleton_beat_redis_urls`` takes it: one node to discover
        the others from, and ``?cluster=true``."""
        return f"redis://127.0.0.1:{self.nodes[0].port}?cluster=true"

    def client(self) -> redis.cluster.RedisCluster:
        """redis-py's cluster client on this cluster (for a test to read what was written)."""
        return redis.cluster.RedisCluster.from_url(self.url.partition("?")[0], socket_timeout=2)

    def seed(self) -> RedisServer:
        """A node that is up (to ask the cluster about itself)."""
        return next(n for n in self.nodes if n.process is not None and n.process.poll() is None)

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [redis_cli_binary(), "--cluster", "create", *(n.name for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        self.wait_until_stable()
        return self

    def topology(self, seen_by: RedisServer | None = None) -> dict[str, list[str]]:
        """Each live primary (``host:port``) and its replicas, as the cluster sees them
        (as ``seen_by`` sees them: nodes learn of changes by gossip, not all at once)."""
        nodes = (seen_by or self.seed()).client().cluster("NODES")  # {address: {flags, ...}}
        live = {
            info["node_id"]: (address.split("@")[0], info["flags"].split(","), info["master_id"])
            for address, info in nodes.items()
            if "fail" not in info["flags"].split(",")
        }
        found: dict[str, list[str]] = {n: [] for n, flags, _ in live.values() if "master" in flags}
        for name, flags, primary in live.values():
            if "slave" in flags and primary in live and live[primary][0] in found:
                found[live[primary][0]].append(name)
        return {primary: sorted(replicas) for primary, replicas in found.items()}

    def node(self, name: str) -> RedisServer:
        return next(n for n in self.nodes if n.name == name)

    def keyslot(self, key: str) -> int:
        """``CLUSTER KEYSLOT key``: the hash slot the cluster puts ``key`` in."""
        return int(self.seed().client().cluster("KEYSLOT", key))

    def primary_of(self, key: str) -> RedisServer:
        """The primary that serves ``key`` now."""
        return self.primary_of_slot(self.keyslot(key))

    def node_id(self, node: RedisServer) -> str:
        return str(node.client().cluster("MYID").decode())

    def start_moving(self, slot: int, to: RedisServer) -> RedisServer:
        """Mark hash ``slot`` as migrating from its primary to the primary ``to`` (which
        answers for the keys it has, after ``ASKING``); returns the primary it leaves."""
        source = self.primary_of_slot(slot)
        to.client().cluster("SETSLOT", slot, "IMPORTING", self.node_id(source))
        source.client().cluster("SETSLOT", slot, "MIGRATING", self.node_id(to))
        return source

    def migrate_keys(self, slot: int, source: RedisServer, to: RedisServer) -> None:
        """``MIGRATE`` the keys of hash ``slot`` from ``source`` to ``to``."""
        client = source.client()
        while keys := client.cluster("GETKEYSINSLOT", slot, 100):
            client.migrate("127.0.0.1", to.port, keys, 0, 5000)

    def finish_moving(self, slot: int, source: RedisServer, to: RedisServer) -> None:
        """Give hash ``slot`` to ``to``; every primary is told at once."""
        for node in (to, source, *(n for n in self.primaries() if n not in (to, source))):
            node.client().cluster("SETSLOT", slot, "NODE", self.node_id(to))

    def move_slot(self, slot: int, to: RedisServer) -> None:
        """Move hash ``slot`` with its keys to the primary ``to`` (as ``redis-cli --cluster
        reshard`` does)."""
        source = self.start_moving(slot, to)
        self.migrate_keys(slot, source, to)
        self.finish_moving(slot, source, to)

    def primaries(self) -> list[RedisServer]:
        return [self.node(name) for name in self.topology()]

    def primary_of_slot(self, slot: int) -> RedisServer:
        for address, info in self.seed().client().cluster("NODES").items():
            flags = info["flags"].split(",")
            if "master" in flags and "fail" not in flags:
                for first, *last in info["slots"]:
                    if int(first) <= slot <= int(last[0] if last else first):
                        return self.node(address.split("@")[0])
        raise AssertionError(f"no primary serves slot {slot}")

    def kill_primary(self, primary: RedisServer, meanwhile: Callable[[], object] = list) -> float:
        """SIGKILL ``primary`` (then call ``meanwhile``) and wait until one of its replicas
        serves its slots and the cluster answers again; returns how long that took (the
        failover time), in seconds."""
        replicas = self.topology()[primary.name]
        assert replicas, f"{primary.name} has no replica to take over"
        killed = time.monotonic()
        primary.kill()
        meanwhile()
        deadline = killed + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, StopIteration):
                if self._failed_over(replicas):
                    return time.monotonic() - killed
            time.sleep(0.02)
        raise RuntimeError(f"no replica of {primary.name} took over within 30 s")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """A replica of ``primary``."""
        return self.node(self.topology()[primary.name][0])

    def _failed_over(self, replicas: list[str]) -> bool:
        promoted = [name for name in replicas if name in self.topology()]
        if not promoted:
            return False
        return self._cluster_ok(self.node(promoted[0]))

    @staticmethod
    def _cluster_ok(node: RedisServer) -> bool:
        return bool(node.client().cluster("INFO").get("cluster_state") == "ok")

    def wait_until_stable(self, timeout: float = 30) -> None:
        """Until every live node says ``cluster_state:ok`` and every replica is in sync
        with its primary (a replica that never synced would not be promoted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, StopIteration):
                if self._stable():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the cluster did not settle within {timeout} s")

    def _stable(self) -> bool:
        live = [n for n in self.nodes if n.process is not None and n.process.poll() is None]
        if not all(self._cluster_ok(node) for node in live):
            return False
        topology = self.topology()
        if any(self.topology(node) != topology for node in live):
            return False
        for replicas in topology.values():
            for name in replicas:
                link = self.node(name).client().info("replication").get("master_link_status")
                if link != "up":
                    return False
        return sum(len(r) for r in topology.values()) == len(live) - len(topology)

    def flush(self) -> None:
        """Empty every primary (their replicas follow)."""
        for name in self.topology():
            self.node(name).client().flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def redis_cli_binary() -> str:
    """The ``redis-cli`` beside ``redis-server`` (it joins a cluster's nodes)."""
    found = shutil.which("redis-cli", path=os.path.dirname(redis_server_binary()))
    found = found or shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("'redis-cli' was not found beside redis-server nor on PATH")
    return found


@contextlib.contextmanager
def redis_cluster_servers(
    primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000
) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of ``primaries * (1 + replicas)`` nodes, stopped at the end."""
    cluster = RedisClusterServers(primaries, replicas, node_timeout_ms)
    try:
        yield cluster.start()
    finally:
        cluster.stop()

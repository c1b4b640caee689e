"""Real ZooKeeper servers for tests and benchmarks: started on free ports, always stopped.

A :class:`ZooKeeperServer` is one ``QuorumPeerMain`` JVM of Debian's ``zookeeper`` package
(``/usr/share/java/zookeeper.jar``) with its data in a temporary directory; a
:class:`ZooKeeperEnsemble` is three (or five) of them voting as one ensemble, whose
members a test kills and starts again. Ticks are short (100 ms) so that sessions of a
second or two are allowed and elections take a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from celery_singleton_beat.testing.servers import free_port

#: Where Debian's ``zookeeper`` package puts the server (``ZOOKEEPER_JAR`` overrides it).
DEFAULT_JAR = "/usr/share/java/zookeeper.jar"
TICK_MS = 100


def zookeeper_jar() -> str:
    """The server's jar; a missing one is a test failure, never a skip."""
    jar = os.environ.get("ZOOKEEPER_JAR", DEFAULT_JAR)
    if not os.path.exists(jar) or shutil.which("java") is None:
        raise RuntimeError(
            f"ZooKeeper ({jar}) or java was not found. The tests start their own ZooKeeper "
            f"servers: install it (Debian: apt-get install zookeeper) or run 'make test', "
            f"which installs it when running as root."
        )
    return jar


def _four_letters(port: int, command: bytes) -> str:
    """A four-letter-word command's answer ('' when the server does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(command)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    """One ZooKeeper server on 127.0.0.1, standalone or a member (``myid``) of an ensemble."""

    def __init__(self, myid: int = 0) -> None:
        self.myid = myid
        self.port = free_port()
        self.peer_ports = (free_port(), free_port())
        self.members: list[ZooKeeperServer] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="singleton-beat-zookeeper-")

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> str:
        data = os.path.join(self._dir, "data")
        os.makedirs(data, exist_ok=True)
        lines = [
            f"tickTime={TICK_MS}",
            "initLimit=20",
            "syncLimit=10",
            f"dataDir={data}",
            f"clientPort={self.port}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat",
            "maxSessionTimeout=60000",
        ]
        if self.members:
            with open(os.path.join(data, "myid"), "w") as out:
                out.write(f"{self.myid}\n")
            lines += [
                f"server.{m.myid}=127.0.0.1:{m.peer_ports[0]}:{m.peer_ports[1]}"
                for m in self.members
            ]
        config = os.path.join(self._dir, "zoo.cfg")
        with open(config, "w") as out:
            out.write("\n".join(lines) + "\n")
        return config

    def spawn(self) -> ZooKeeperServer:
        """Start the JVM without waiting for it to serve (an ensemble's members start
        together)."""
        config = self._write_config()
        log = open(os.path.join(self._dir, "server.log"), "ab")  # noqa: SIM115 (the child's)
        self.process = subprocess.Popen(
            [
                "java", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false",
                "-cp", f"{self._dir}:{zookeeper_jar()}",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain", config,
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        return self

    def serving(self) -> bool:
        """Whether the server answers clients (an ensemble's member: with a quorum)."""
        return "Mode:" in _four_letters(self.port, b"srvr")

    def mode(self) -> str:
        """'leader', 'follower' or 'standalone' ('' when not serving)."""
        found = re.search(r"Mode: (\w+)", _four_letters(self.port, b"srvr"))
        return found[1] if found else ""

    def wait_serving(self, timeout: float = 30) -> ZooKeeperServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                with open(os.path.join(self._dir, "server.log"), errors="replace") as log:
                    tail = log.read()[-2000:]
                raise RuntimeError(f"ZooKeeper on port {self.port} exited: {tail}")
            if self.serving():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"ZooKeeper on port {self.port} did not serve within {timeout} s")

    def start(self) -> ZooKeeperServer:
        return self.spawn().wait_serving()

    def kill(self) -> None:
        """SIGKILL the server and wait for it to go (its data stays for a restart)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


class ZooKeeperEnsemble:
    """``size`` servers voting as one ensemble; :attr:`hosts` in kazoo's form."""

    def __init__(self, size: int = 3) -> None:
        self.servers = [ZooKeeperServer(myid) for myid in range(1, size + 1)]
        for server in self.servers:
            server.members = self.servers

    @property
    def hosts(self) -> str:
        return ",".join(s.name for s in self.servers)

    def by_mode(self) -> list[ZooKeeperServer]:
        """The members, followers first and the leader last."""
        return sorted(self.servers, key=lambda s: s.mode() == "leader")

    def start(self) -> ZooKeeperEnsemble:
        for server in self.servers:
            server.spawn()
        for server in self.servers:
            server.wait_serving(60)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@contextlib.contextmanager
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """One standalone server, stopped at the end."""
    server = ZooKeeperServer()
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def zookeeper_ensemble(size: int = 3) -> Iterator[ZooKeeperEnsemble]:
    """An ensemble of ``size`` servers, stopped at the end."""
    ensemble = ZooKeeperEnsemble(size)
    try:
        yield ensemble.start()
    finally:
        ensemble.stop()

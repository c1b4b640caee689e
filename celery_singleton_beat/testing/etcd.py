"""Real etcd servers for tests and benchmarks: started on free ports in temporary
directories, always stopped.

An :class:`EtcdCluster` is one member or several (three for the failure tests), each an
``etcd`` process a test can kill and start again on its ports and data directory, as an
operator restarts a member.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import urllib3

from celery_singleton_beat.testing.servers import free_port


def etcd_binary() -> str:
    """The ``etcd`` to use; a missing one is a test failure, never a skip."""
    binary = os.environ.get("ETCD", "etcd")
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(
            f"{binary!r} was not found on PATH. The tests start their own etcd members: "
            f"install it (Debian: apt-get install etcd-server) or run 'make test', "
            f"which installs it when running as root."
        )
    return found


def cluster_token(initial: str) -> str:
    """One token per cluster, so that members of two test clusters never join up."""
    return f"singleton-beat-{abs(hash(initial)):x}"


class EtcdMember:
    """One ``etcd`` process on 127.0.0.1, its data in a temporary directory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="singleton-beat-etcd-")
        self._started = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def arguments(self, cluster: str) -> list[str]:
        return [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", os.path.join(self._dir, "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "existing" if self._started else "new",
            "--initial-cluster-token", cluster_token(cluster),
            # elections in tenths of a second, as on a local network
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--log-level", "error",
        ]  # fmt: skip

    def start(self, cluster: str) -> EtcdMember:
        """Start the process (again, on the same ports and data, after :meth:`kill`)."""
        log = open(os.path.join(self._dir, "etcd.log"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.arguments(cluster), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self._started = True
        return self

    def answers(self) -> bool:
        """Whether the member serves a linearizable read (it is in a majority)."""
        try:
            response = urllib3.request(
                "POST", f"{self.url}/v3/kv/range", body=b'{"key": "AA=="}', timeout=1.0,
                retries=False,
            )  # fmt: skip
        except urllib3.exceptions.HTTPError:
            return False
        return response.status == 200

    def kill(self) -> None:
        """SIGKILL the member and wait for it to go."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


class EtcdCluster:
    """``size`` members forming one cluster."""

    def __init__(self, size: int = 1) -> None:
        self.members = [EtcdMember(f"m{i}") for i in range(size)]
        self.initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self) -> EtcdCluster:
        for member in self.members:
            member.start(self.initial)
        self.wait_answering(self.members)
        return self

    def leader(self) -> EtcdMember:
        """The member that leads the cluster now."""
        for member in self.members:
            if member.process is None or member.process.poll() is not None:
                continue
            with contextlib.suppress(urllib3.exceptions.HTTPError, ValueError):
                status = urllib3.request(
                    "POST", f"{member.url}/v3/maintenance/status", body=b"{}", timeout=1.0
                ).json()
                if status.get("leader") == status.get("header", {}).get("member_id"):
                    return member
        raise RuntimeError("no etcd member leads the cluster")

    def restart(self, member: EtcdMember) -> None:
        """Start a killed member again on its ports and data."""
        member.start(self.initial)

    def wait_answering(self, members: list[EtcdMember], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not all(m.answers() for m in members):
            for member in members:
                if member.process is not None and member.process.poll() is not None:
                    raise RuntimeError(f"etcd member {member.name} exited; see {member._dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not answer within {timeout} s")
            time.sleep(0.05)

    def flush(self) -> None:
        """Delete every key (leases end by themselves)."""
        body = b'{"key": "AA==", "range_end": "AA=="}'  # from the first key to the last
        urllib3.request("POST", f"{self.endpoints[0]}/v3/kv/deleterange", body=body, timeout=5)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


@contextlib.contextmanager
def etcd_cluster(size: int = 1) -> Iterator[EtcdCluster]:
    """A cluster of ``size`` members, stopped at the end."""
    cluster = EtcdCluster(size)
    try:
        yield cluster.start()
    finally:
        cluster.stop()

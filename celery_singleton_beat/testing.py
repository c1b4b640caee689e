"""Real Redis servers for tests, benchmarks and demos: started on free ports, always stopped.

Each :class:`RedisServer` is a ``redis-server`` process with no persistence that a test
can kill, pause (SIGSTOP), resume, restart (it comes back empty on the same port) or
pause for clients (``CLIENT PAUSE``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis


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


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1."""

    def __init__(
        self, port: int | None = None, password: str | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="singleton-beat-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2
        )

    def start(self) -> RedisServer:
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
        args += self.extra_args
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
    servers: list[RedisServer] = []
    try:
        for _ in range(count):
            servers.append(RedisServer().start())
        yield servers
    finally:
        for server in servers:
            server.stop()


class SilentServer:
    """A TCP listener that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._sock.accept()
                self._accepted.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self._accepted:
            conn.close()


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    scheduler: str = "singleton"
    settings: dict[str, Any] | None = None
    env: dict[str, str] = field(default_factory=dict)
    group: bool = False
    """Whether the process leads a process group of its own (a worker with its embedded
    beat), signalled as a whole, as the host or container of a replica would be."""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process, or to its whole group."""
        if self.group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signum)
        else:
            self.popen.send_signal(signum)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class CeleryCluster:
    """``celery worker`` and ``celery beat`` processes of one app, started and stopped here.

    ``env`` is the environment every process gets (on top of this one's): where the app
    reads its broker, masters and schedule from.
    """

    workdir: Path
    app: str
    base_env: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    queue: str = "celery"
    unset: tuple[str, ...] = ()
    """Variables of this process's environment the processes do not get."""

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in self.unset}
        env.update(self.base_env, PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str], group: bool = False
    ) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", self.app, *args],
                cwd=self.workdir, env=self.env(**env), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=group,
            )  # fmt: skip
        process = Process(name, popen, log, group=group)
        self.processes.append(process)
        return process

    def start(self, name: str, args: list[str], **env: str) -> Process:
        """Any long-running ``celery -A app`` command (``args`` after ``-A app``), as it is."""
        return self._spawn(name, args, env)

    def start_worker(
        self,
        name: str = "worker",
        pool: str = "threads",
        concurrency: int = 4,
        args: tuple[str, ...] = (),
        beat: str | None = None,
        **env: str,
    ) -> Process:
        """A ``celery worker``, returned once it says it is ready; ``args`` adds options
        (``("-E",)`` sends task events).

        With ``beat`` (a scheduler, such as ``"singleton"``) the worker runs an embedded
        beat (``-B --scheduler beat``; a worker's ``-S`` is its state file), a replica of
        its own: Celery runs it in a child process, so the worker leads a process group,
        killed as a whole (:attr:`Process.group`).
        """
        embedded = ["-B", "--scheduler", beat, "-s", f"{name}-beat.db"] if beat else []
        worker = self._spawn(
            name,
            ["worker", "-P", pool, "-c", str(concurrency), "-Q", self.queue, "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel", "INFO", "-n", f"{name}@%h",
             *embedded, *args],
            env,
            group=beat is not None,
        )  # fmt: skip
        wait_for(lambda: "ready." in worker.text(), 30, f"worker ready\n{worker.text()}")
        return worker

    def start_replica(
        self,
        name: str,
        scheduler: str = "singleton",
        settings: dict[str, Any] | None = None,
        loglevel: str = "INFO",
        **env: str,
    ) -> Process:
        """A ``celery beat`` replica; ``settings`` adds Celery settings for this one only."""
        if settings:
            env.update(self.settings_env(settings))
        replica = self._spawn(
            name,
            ["beat", "-S", scheduler, "--loglevel", loglevel, "--pidfile=", "-s", f"{name}.db"],
            env,
        )
        replica.scheduler, replica.settings, replica.env = scheduler, settings, env
        return replica

    def restart(self, process: Process) -> Process:
        self.kill(process)
        self.processes.remove(process)
        return self.start_replica(process.name, process.scheduler, process.settings, **process.env)

    def replica_id(self, process: Process) -> str:
        """The id a replica gives itself (host:pid), as in the slot headers."""
        return f"{socket.gethostname()}:{process.popen.pid}"

    def replica_of(self, replica_id: str) -> Process:
        return next(p for p in self.processes if self.replica_id(p) == replica_id)

    def settings_env(self, settings: dict[str, Any]) -> dict[str, str]:
        """Environment that gives one replica extra settings (the app decides how)."""
        raise NotImplementedError(f"{type(self).__name__} cannot pass per-replica settings")

    def kill(self, process: Process) -> None:
        """SIGKILL the process (its whole group, for a worker with an embedded beat)."""
        if process.alive() or process.group:
            process.signal(signal.SIGCONT)
            process.signal(signal.SIGKILL)
        process.popen.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process.alive():
                process.signal(signal.SIGCONT)
                process.signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.signal(signal.SIGKILL)
                process.popen.wait()
            if process.group:  # an embedded beat outliving its worker goes with it
                process.signal(signal.SIGKILL)


def http_status(port: int, path: str) -> int:
    """The status of ``GET path`` on 127.0.0.1:``port`` (a health endpoint); 0 while
    nothing listens (a replica still starting), so that waits try again."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except urllib.error.URLError:
        return 0


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

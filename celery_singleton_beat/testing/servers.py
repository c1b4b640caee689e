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
import tempfile
import threading
import time
from collections.abc import Iterator

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

"""Real ``celery worker`` and ``celery beat`` processes of one app, started and stopped by a
test (or a benchmark, or a demo), whatever happens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    scheduler: str = "singleton"
    settings: dict[str, Any] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.popen.poll() is None

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

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.base_env, PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], **env: str) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", self.app, *args],
                cwd=self.workdir, env=self.env(**env), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_worker(
        self,
        name: str = "worker",
        pool: str = "threads",
        concurrency: int = 4,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> Process:
        """A ``celery worker``, returned once it says it is ready; ``args`` adds options
        (``("-E",)`` sends task events)."""
        worker = self._spawn(
            name,
            ["worker", "-P", pool, "-c", str(concurrency), "-Q", self.queue, "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel", "INFO", "-n", f"{name}@%h",
             *args],
            **env,
        )  # fmt: skip
        wait_for(lambda: "ready." in worker.text(), 30, f"worker ready\n{worker.text()}")
        return worker

    def start_replica(
        self,
        name: str,
        scheduler: str = "singleton",
        settings: dict[str, Any] | None = None,
        **env: str,
    ) -> Process:
        """A ``celery beat`` replica; ``settings`` adds Celery settings for this one only."""
        if settings:
            env.update(self.settings_env(settings))
        replica = self._spawn(
            name,
            ["beat", "-S", scheduler, "--loglevel", "INFO", "--pidfile=", "-s", f"{name}.db"],
            **env,
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
        if process.alive():
            process.popen.send_signal(signal.SIGCONT)
            process.popen.kill()
        process.popen.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process.alive():
                process.popen.send_signal(signal.SIGCONT)
                process.popen.terminate()
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

"""Real ``celery worker`` and ``celery beat`` processes of one app, started and stopped by a
test (or a benchmark, or a demo), whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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

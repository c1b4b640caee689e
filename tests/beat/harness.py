"""Real beat replicas and a real worker as subprocesses, for the scheduler's promise.

A :class:`BeatCluster` starts ``celery beat -S singleton`` replicas and one ``celery
worker`` of ``tests.beat.app`` against Redis masters and a Redis broker that the test
started, lets the test kill, pause and restart replicas, and reads back what the worker
executed. Every process is stopped at the end, whatever happens.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from celery_singleton_beat.testing import RedisServer

ROOT = Path(__file__).resolve().parents[2]


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
class BeatCluster:
    workdir: Path
    masters: list[RedisServer]
    broker: RedisServer
    schedule: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(ROOT),
            TEST_BROKER_URL=self.broker.url,
            TEST_MASTERS=",".join(m.url for m in self.masters),
            TEST_SCHEDULE=json.dumps(self.schedule),
            TEST_SETTINGS=json.dumps(self.settings),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], **env: str) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tests.beat.app", *args],
                cwd=self.workdir, env=self.env(**env), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_worker(self) -> Process:
        worker = self._spawn(
            "worker",
            ["worker", "-P", "threads", "-c", "4", "-Q", "beat-tests", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel", "INFO", "-n", "w1@%h"],
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
            env["TEST_SETTINGS"] = json.dumps({**self.settings, **settings})
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

    def kill(self, process: Process) -> None:
        if process.alive():
            process.popen.send_signal(signal.SIGCONT)
            process.popen.kill()
        process.popen.wait()

    def executions(self) -> list[dict[str, Any]]:
        client = redis.Redis.from_url(self.broker.url)
        return [json.loads(row) for row in client.lrange("executions", 0, -1)]

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


@contextmanager
def beat_cluster(
    workdir: Path, masters: list[RedisServer], schedule: dict[str, Any], **settings: Any
) -> Iterator[BeatCluster]:
    broker = RedisServer().start()
    cluster = BeatCluster(workdir, masters, broker, schedule, settings)
    try:
        yield cluster
    finally:
        cluster.stop()
        broker.stop()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def slot_ms(label: str) -> int:
    """Parse a slot header (``2026-11-24T23:00:00.000Z``) back to UTC milliseconds."""
    moment = dt.datetime.strptime(label, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return round(moment.timestamp() * 1000)


def executed_slots(rows: list[dict[str, Any]], entry: str) -> Counter[int]:
    """How often each slot of ``entry`` was executed."""
    return Counter(slot_ms(r["slot"]) for r in rows if r["entry"] == entry)


def interval_slots(every: float, start: float, end: float) -> set[int]:
    """Slots of an epoch-anchored interval entry within [start, end] (seconds)."""
    step = round(every * 1000)
    first = (round(start * 1000) // step + 1) * step
    return set(range(first, round(end * 1000) + 1, step))


def check_exactly_once(
    rows: list[dict[str, Any]], entry: str, every: float, start: float, end: float
) -> None:
    """Every slot of ``entry`` in [start, end] ran exactly once; report what did not."""
    counts = executed_slots(rows, entry)
    expected = interval_slots(every, start, end)
    missed = sorted(s for s in expected if counts[s] == 0)
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    assert (missed, duplicated) == ([], []), f"{entry}: missed {missed}, duplicated {duplicated}"
    assert len(expected) >= (end - start) / every - 1


def master_hash(masters: list[RedisServer], key: str) -> dict[str, int]:
    """The maximum of each field of a hash over the masters that answer."""
    merged: dict[str, int] = {}
    for master in masters:
        try:
            values = master.client().hgetall(key)
        except redis.ConnectionError:
            continue
        for field_name, value in values.items():
            name = field_name.decode()
            merged[name] = max(merged.get(name, 0), int(value))
    return merged

"""The worker app of bench/task_overhead.py: one no-op task per variant."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun, task_prerun
from celery_singleton import Singleton

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.connections.resp import pack
from celery_singleton_beat.locks import Redlock

MASTERS = os.environ.get("BENCH_MASTERS", "redis://127.0.0.1:1/0").split(",")
app = Celery("overhead", broker=os.environ.get("BENCH_BROKER", "memory://"))
app.conf.update(
    singleton_beat_redis_urls=MASTERS,
    singleton_backend_url=MASTERS[0],
    # the worker started with BENCH_DROP_COPIES=0 runs every copy of a slot
    singleton_beat_drop_slot_copies=os.environ.get("BENCH_DROP_COPIES", "1") == "1",
    task_default_queue="overhead",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@functools.cache
def masters(count: int) -> Redlock:
    return Redlock.from_urls(MASTERS[:count], node_timeout=0.05)


@app.task(name="plain")
def plain(i: int) -> None:
    """No work: the baseline."""


@app.task(name="plain_slot")
def plain_slot(i: int) -> None:
    """As plain; its messages carry a beat slot's headers (the worker marks each slot)."""


@app.task(name="plain_off")
def plain_off(i: int) -> None:
    """As plain, on the worker that does not drop slot copies."""


@app.task(name="plain_off_slot")
def plain_off_slot(i: int) -> None:
    """As plain_slot, on the worker that does not drop slot copies."""


@app.task(name="ours_1", base=SingletonTask, singleton_backend=lambda app: masters(1))
def ours_1(i: int) -> None:
    """No work, one execution at a time per argument, one master."""


@app.task(name="ours_3", base=SingletonTask, singleton_backend=lambda app: masters(3))
def ours_3(i: int) -> None:
    """No work, one execution at a time per argument, three masters."""


@app.task(name="slot_3", base=SingletonTask, singleton_backend=lambda app: masters(3))
def slot_3(i: int) -> None:
    """As ours_3; its messages carry a beat slot's headers (sent by the benchmark)."""


class _Floor:
    """One master's lock scripts on a raw socket, without the library: the acquire's round
    trip, and a release sent without waiting (its reply is read with the next acquire's)."""

    ACQUIRE = hashlib.sha1(Redlock.ACQUIRE.encode()).hexdigest()
    RELEASE = hashlib.sha1(Redlock.RELEASE.encode()).hexdigest()

    def __init__(self) -> None:
        host, port = MASTERS[0].split("//")[1].split("/")[0].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(pack([("SCRIPT", "LOAD", Redlock.ACQUIRE),
                                ("SCRIPT", "LOAD", Redlock.RELEASE)]))  # fmt: skip
        self.unread, self.inbox = 2, b""

    def lock(self, key: str, token: str) -> None:
        self.sock.sendall(
            pack([("EVALSHA", self.ACQUIRE, 2, key, f"{key}:fence", token, 60000, 0)])
        )
        self.read(self.unread + 1)
        if not self.inbox.split(b"\r\n")[-2].startswith(b":"):
            raise RuntimeError(f"floor: unexpected reply {self.inbox!r}")
        self.inbox, self.unread = b"", 0
        self.sock.sendall(pack([("EVALSHA", self.RELEASE, 1, key, token)]))
        self.unread = 1

    def read(self, replies: int) -> None:
        while self.inbox.count(b"\r\n") < replies + (self.inbox.count(b"$") or 0):
            self.inbox += self.sock.recv(65536)


@functools.cache
def _floor(pid: int) -> _Floor:
    return _Floor()


@app.task(name="floor_1")
def floor_1(i: int) -> None:
    """A plain task taking and releasing a lock on one master as the library does (one round
    trip and a posted release), on a raw socket: the floor of a singleton run."""
    _floor(os.getpid()).lock(f"floor:{i}", f"{i}@bench")


@app.task(name="celery_singleton", base=Singleton)
def celery_singleton(i: int) -> None:
    """No work, celery-singleton's lock on one node."""


_started: dict[str, float] = {}


@task_prerun.connect
def _prerun(task_id: str, **_: Any) -> None:
    _started[task_id] = time.perf_counter()


@functools.cache
def _results(pid: int) -> redis.Redis:
    """One client per (forked) process: a new connection per task would load the machine."""
    return redis.Redis.from_url(app.conf.broker_url)


@task_postrun.connect
def _postrun(task_id: str, task: Any, state: str, **_: Any) -> None:
    took = time.perf_counter() - _started.pop(task_id, time.perf_counter())
    _results(os.getpid()).rpush(
        f"took:{task.name}", json.dumps(took if state == "SUCCESS" else None)
    )

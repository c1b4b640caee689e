"""The worker app of bench/task_overhead.py: one no-op task per variant."""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun, task_prerun
from celery_singleton import Singleton

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.locks import Redlock

MASTERS = os.environ.get("BENCH_MASTERS", "redis://127.0.0.1:1/0").split(",")
app = Celery("overhead", broker=os.environ.get("BENCH_BROKER", "memory://"))
app.conf.update(
    singleton_beat_redis_urls=MASTERS,
    singleton_backend_url=MASTERS[0],
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


@app.task(name="ours_1", base=SingletonTask, singleton_backend=lambda app: masters(1))
def ours_1(i: int) -> None:
    """No work, one execution at a time per argument, one master."""


@app.task(name="ours_3", base=SingletonTask, singleton_backend=lambda app: masters(3))
def ours_3(i: int) -> None:
    """No work, one execution at a time per argument, three masters."""


@app.task(name="slot_3", base=SingletonTask, singleton_backend=lambda app: masters(3))
def slot_3(i: int) -> None:
    """As ours_3; its messages carry a beat slot's headers (sent by the benchmark)."""


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

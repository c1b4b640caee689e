"""The Celery app the singleton-task tests run as real workers.

``TEST_BROKER_URL`` is a Redis broker the test started; ``TEST_MASTERS`` the lock masters.
Every run writes a row to the broker's ``runs`` list, and every library event goes to its
``events`` list, so the test can read both back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request

from celery_singleton_beat import SingletonTask, SlotAwareTask, events

app = Celery("task_tests", broker=os.environ.get("TEST_BROKER_URL", "memory://"))
app.conf.update(
    singleton_beat_redis_urls=os.environ.get("TEST_MASTERS", "redis://127.0.0.1:1/0"),
    singleton_beat_node_timeout=0.05,
    singleton_beat_task_retry_countdown=0.5,
    task_default_queue="task-tests",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
)
app.conf.update(json.loads(os.environ.get("TEST_SETTINGS", "{}")))


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["TEST_BROKER_URL"])


def note(task: Any, **fields: Any) -> None:
    """Write one row about this run to the broker's ``runs`` list."""
    lease = task.singleton
    row = {
        "task": task.name,
        "task_id": task.request.id,
        "retries": task.request.retries,
        "fence": lease.fence if lease else None,
        "lost": lease.lost if lease else None,
        "at": time.time(),
        **fields,
    }
    _client().rpush("runs", json.dumps(row))


def _record(event: events.Event) -> None:
    row = {"type": type(event).__name__, **dataclasses.asdict(event)}
    _client().rpush("events", json.dumps(row, default=str))


if "TEST_BROKER_URL" in os.environ:
    events.subscribe(_record)


@app.task(bind=True, base=SingletonTask, singleton_key=lambda args, kwargs: "slow")
def slow(self: Any, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    note(self, start=start, end=time.time())


@app.task(bind=True, base=SingletonTask, singleton_ttl=1.0)
def outlives_ttl(self: Any, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    note(self, start=start, end=time.time(), remaining=self.singleton.remaining())


@app.task(bind=True, base=SingletonTask, singleton_ttl=2.0)
def until_killed(self: Any, seconds: float) -> None:
    note(self, phase="started")
    time.sleep(seconds)
    note(self, phase="finished")


@app.task(bind=True, base=SingletonTask, singleton_ttl=1.5)
def watches_its_lease(self: Any, seconds: float) -> None:
    note(self, phase="started")
    deadline = time.time() + seconds
    while time.time() < deadline and not self.singleton.lost:
        time.sleep(0.05)
    note(self, phase="finished")


@app.task(bind=True, base=SingletonTask, soft_time_limit=1)
def over_time(self: Any) -> None:
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        note(self, phase="soft limit")
        raise


@app.task(bind=True, base=SingletonTask, singleton_release_on_retry=True)
def retries_releasing(self: Any) -> None:
    note(self)
    if self.request.retries == 0:
        raise self.retry(countdown=0.5)


@app.task(bind=True, base=SingletonTask, singleton_release_on_retry=False)
def retries_keeping(self: Any) -> None:
    note(self)
    if self.request.retries == 0:
        raise self.retry(countdown=0.5)


@app.task(bind=True, base=SingletonTask, singleton_on_lock_error="fail_open")
def runs_anyway(self: Any) -> None:
    note(self)


@app.task(bind=True, base=SingletonTask, max_retries=None)
def waits_for_the_lock_store(self: Any) -> None:
    note(self)


@app.task(bind=True, base=SingletonTask, singleton_enqueue=True)
def queued_once(self: Any, seconds: float) -> None:
    note(self, phase="started")
    time.sleep(seconds)


@app.task(bind=True, base=SlotAwareTask)
def plain_but_slot_aware(self: Any) -> None:
    _client().rpush("runs", json.dumps({"task": self.name, "task_id": self.request.id}))


@app.task(bind=True, base=SingletonTask, singleton_key="conflict", singleton_on_conflict="raise")
def raises_on_conflict(self: Any) -> None:
    note(self)


@app.task(bind=True, base=SingletonTask, singleton_key="conflict", singleton_on_conflict="retry",
          singleton_retry_countdown=0.3, max_retries=None)  # fmt: skip
def retries_on_conflict(self: Any) -> None:
    note(self)


@app.task(bind=True, base=SingletonTask, singleton_key="{label}", singleton_enqueue=True)
def queued_by_label(self: Any, label: str) -> None:
    note(self, label=label)


@app.task(bind=True, base=SlotAwareTask, max_retries=None)
def slot_aware_waits_for_the_lock_store(self: Any) -> None:
    _client().rpush("runs", json.dumps({"task": self.name, "task_id": self.request.id}))


@app.task(bind=True, base=SlotAwareTask, max_retries=None)
def slot_aware_retries_once(self: Any) -> None:
    _client().rpush("runs", json.dumps({"task": self.name, "retries": self.request.retries}))
    if _client().incr("slot_aware_retries_once") == 1:
        raise self.retry(countdown=0.2)


@app.task(bind=True, base=SingletonTask)
def nightly_report(self: Any, seconds: float) -> dict[str, int]:
    note(self, phase="started")
    time.sleep(seconds)
    return {"rows": 42}


@app.task(bind=True)
def plain(self: Any, seconds: float = 0.0) -> int:
    """A task with no base of the library: each run counts itself and returns its number."""
    number = int(_client().incr("plain_runs"))
    row = {"task": self.name, "task_id": self.request.id, "retries": self.request.retries,
           "number": number, "pid": os.getpid()}  # fmt: skip
    _client().rpush("runs", json.dumps(row))
    time.sleep(seconds)
    return number


@app.task(bind=True)
def plain_retries_once(self: Any) -> int:
    """A plain task whose first attempt retries."""
    _client().rpush("runs", json.dumps({"task": self.name, "retries": self.request.retries}))
    if self.request.retries == 0:
        raise self.retry(countdown=0.2)
    return int(self.request.retries)


class AuditedRequest(Request):  # type: ignore[misc]
    """A task's own request class, as Celery documents it: notes every message a pool
    process accepts, with the request's classes."""

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        row = {"task": self.task.name, "task_id": self.id,
               "classes": [c.__name__ for c in type(self).__mro__]}  # fmt: skip
        _client().rpush("accepted", json.dumps(row))
        super().on_accepted(pid, time_accepted)


class Audited(Task):  # type: ignore[misc]
    Request = "tests.tasks.app:AuditedRequest"


@app.task(bind=True, base=Audited)
def audited(self: Any) -> None:
    _client().rpush("runs", json.dumps({"task": self.name, "task_id": self.request.id}))

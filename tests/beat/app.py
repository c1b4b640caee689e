"""The Celery app that the multi-process tests run as beat replicas and as a worker.

Configured from the environment so that each test can start its own cluster:
``TEST_BROKER_URL``, ``TEST_MASTERS`` (comma-separated), ``TEST_SCHEDULE`` (JSON: entry
name -> {"every": seconds} or {"cron": "m h dom mon dow"}, plus "options"), and
``TEST_SETTINGS`` (JSON of extra Celery settings). ``TEST_CLOCK_SKEW`` (seconds) shifts
this process's scheduler clock (slot times, heartbeat info) as a wrong system clock
would; ``TEST_RECORD_REPLICAS`` logs every ReplicaSeen event to the broker Redis, where
every ``RunSkipped`` (a copy a worker did not run) goes to ``skipped``. With
``TEST_DATABASE`` (JSON of a Django ``DATABASES`` entry) beat runs on the database slot
store instead, with no Redis master.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import time
from collections.abc import Hashable, Mapping
from typing import Any

import redis
from celery import Celery
from celery.schedules import crontab

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.decide import Verdict
from celery_singleton_beat.core.schema import Header
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.sources import EntrySpec, ScheduleSource
from celery_singleton_beat.tasks import overlap


def _django(database: str) -> dict[str, Any]:
    """Start Django on the test's database for the database slot store."""
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": json.loads(database)},
        INSTALLED_APPS=["django_celery_singleton_beat"],
        USE_TZ=True,
        SINGLETON_BEAT_RECORD=False,
    )
    django.setup()
    return {"singleton_beat_store": "database", "singleton_beat_redis_urls": None}


DATABASE = os.environ.get("TEST_DATABASE")
app = Celery("beat_tests", broker=os.environ.get("TEST_BROKER_URL", "memory://"))
app.conf.update(
    beat_scheduler="celery_singleton_beat.Scheduler",
    singleton_beat_redis_urls=os.environ.get("TEST_MASTERS", "redis://127.0.0.1:1/0"),
    task_default_queue="beat-tests",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if DATABASE:
    app.conf.update(_django(DATABASE))
app.conf.update(json.loads(os.environ.get("TEST_SETTINGS", "{}")))

if os.environ.get("TEST_CLOCK_SKEW"):
    _skew = float(os.environ["TEST_CLOCK_SKEW"])
    Runtime.of(app).clock = lambda: time.time() + _skew


def _replica_seen_recorder(client: redis.Redis) -> events.Subscriber:
    def record(event: events.Event) -> None:
        if isinstance(event, events.ReplicaSeen):
            row = {"replica": f"{event.host}:{event.pid}", "replicas": event.replicas,
                   "at": time.time()}  # fmt: skip
            client.rpush("replica_seen", json.dumps(row))

    return record


if os.environ.get("TEST_RECORD_REPLICAS"):
    events.subscribe(_replica_seen_recorder(redis.Redis.from_url(os.environ["TEST_BROKER_URL"])))


def _dropped_recorder(client: redis.Redis) -> events.Subscriber:
    def record(event: events.Event) -> None:
        if isinstance(event, events.RunSkipped):
            client.rpush("skipped", json.dumps(dataclasses.asdict(event), default=str))

    return record


if os.environ.get("TEST_BROKER_URL", "").startswith(("redis://", "rediss://")):
    # a Sentinel broker (sentinel://) has no single server to record into
    events.subscribe(_dropped_recorder(redis.Redis.from_url(os.environ["TEST_BROKER_URL"])))


def _schedule(spec: dict[str, Any]) -> dict[str, Any]:
    entries = {}
    for name, entry in spec.items():
        if "cron" in entry:
            minute, hour, dom, month, dow = entry["cron"].split()
            when: Any = crontab(minute, hour, dow, dom, month)
        else:
            when = float(entry["every"])
        entries[name] = {
            "task": entry.get("task", "record"),
            "schedule": when,
            "args": (name, *entry.get("args", ())),
            "options": entry.get("options", {}),
        }
    return entries


app.conf.beat_schedule = _schedule(json.loads(os.environ.get("TEST_SCHEDULE", "{}")))


class RedisSource(ScheduleSource):
    """A schedule kept as JSON (``TEST_SCHEDULE``'s form) in the broker Redis under
    ``schedule``, its version under ``schedule-version``: a test edits it while beat runs."""

    name = "test-redis"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.client = redis.Redis.from_url(os.environ["TEST_BROKER_URL"])

    def version(self) -> Hashable:
        return self.client.get("schedule-version")

    def entries(self) -> Mapping[str, EntrySpec]:
        return _schedule(json.loads(self.client.get("schedule") or "{}"))


@app.task(bind=True, name="record")
def record(self: Any, entry: str) -> None:
    """Log one execution, with the slot headers beat gave the message, to the broker Redis."""
    headers = self.request.headers or {}
    row = {
        "entry": entry,
        "task_id": self.request.id,
        "slot": headers.get(Header.SLOT.value),
        "beat_entry": headers.get(Header.ENTRY.value),
        "replica": headers.get(Header.REPLICA.value),
        "at": time.time(),
        "worker": socket.gethostname(),
    }
    client = redis.Redis.from_url(os.environ["TEST_BROKER_URL"])
    client.rpush("executions", json.dumps(row))


@app.task(bind=True, name="record_slot")
def record_slot(self: Any, entry: str, scheduled_at: str | None = None) -> None:
    """Log one execution with the slot time it was given as a keyword argument
    (``slot_kwarg``) and as the ``singleton_beat_slot`` header."""
    headers = self.request.headers or {}
    row = {"entry": entry, "kwarg": scheduled_at, "slot": headers.get(Header.SLOT.value),
           "at": time.time()}  # fmt: skip
    redis.Redis.from_url(os.environ["TEST_BROKER_URL"]).rpush("executions", json.dumps(row))


@app.task(bind=True, name="fail")
def fail(self: Any, entry: str) -> None:
    """Log one execution, then fail while the broker Redis holds ``failing`` (a test
    clears it to make the runs succeed)."""
    headers = self.request.headers or {}
    client = redis.Redis.from_url(os.environ["TEST_BROKER_URL"])
    client.rpush("executions", json.dumps({"entry": entry, "slot": headers.get(Header.SLOT.value),
                                          "at": time.time()}))  # fmt: skip
    if client.get("failing"):
        raise RuntimeError(f"{entry} failed on purpose")


overlap.install()


@app.task(bind=True, name="slow")
def slow(self: Any, entry: str, seconds: float) -> None:
    """Run for ``seconds``; log the run (slot, start, end) to the broker Redis."""
    headers = self.request.headers or {}
    started = time.time()
    time.sleep(seconds)
    row = {"entry": entry, "slot": headers.get("singleton_beat_slot"), "start": started,
           "end": time.time(), "worker": self.request.hostname}  # fmt: skip
    redis.Redis.from_url(os.environ["TEST_BROKER_URL"]).rpush("slow_runs", json.dumps(row))


class CrashAfterPublish(Scheduler):
    """Dies after publishing a slot of ``TEST_CRASH_ENTRY``, before marking it done."""

    def slot_published(self, plan: Any, slot: int) -> None:
        if plan.name == os.environ.get("TEST_CRASH_ENTRY"):
            os._exit(17)


class CrashAfterMark(Scheduler):
    """Dies right after marking a published slot of ``TEST_CRASH_ENTRY`` done."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        mark = self.store.finish

        def finish(outcomes: Any, *args: Any, **kwargs: Any) -> Any:
            marked = mark(outcomes, *args, **kwargs)
            crash = os.environ.get("TEST_CRASH_ENTRY")
            if any(o[0] == crash and o[2] == Verdict.FIRE.value for o in outcomes):
                os._exit(17)
            return marked

        self.store.finish = finish  # type: ignore[method-assign]


class CrashAfterClaim(Scheduler):
    """Dies after claiming a slot of ``TEST_CRASH_ENTRY``, before publishing it."""

    def publish_slot(self, plan: Any, slot: int) -> str:
        if plan.name == os.environ.get("TEST_CRASH_ENTRY"):
            os._exit(17)
        return super().publish_slot(plan, slot)


class PauseBeforePublish(Scheduler):
    """Stops itself (SIGSTOP) once the test sets ``pause`` on the broker Redis: at the next
    slot it claimed, before publishing it, having written the slot and the time under
    ``paused``; the test sends SIGCONT."""

    def publish_slot(self, plan: Any, slot: int) -> str:
        client = redis.Redis.from_url(os.environ["TEST_BROKER_URL"])
        if client.delete("pause"):
            client.set("paused", json.dumps({"entry": plan.name, "slot": slot, "at": time.time()}))
            os.kill(os.getpid(), signal.SIGSTOP)
        return super().publish_slot(plan, slot)

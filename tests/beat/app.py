"""The Celery app that the multi-process tests run as beat replicas and as a worker.

Configured from the environment so that each test can start its own cluster:
``TEST_BROKER_URL``, ``TEST_MASTERS`` (comma-separated), ``TEST_SCHEDULE`` (JSON: entry
name -> {"every": seconds} or {"cron": "m h dom mon dow"}, plus "options"), and
``TEST_SETTINGS`` (JSON of extra Celery settings). With ``TEST_DATABASE`` (JSON of a Django
``DATABASES`` entry) beat runs on the database slot store instead, with no Redis master.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import redis
from celery import Celery
from celery.schedules import crontab

from celery_singleton_beat.scheduler import Scheduler
from celery_singleton_beat.schema import Header


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


def _schedule(spec: dict[str, Any]) -> dict[str, Any]:
    entries = {}
    for name, entry in spec.items():
        if "cron" in entry:
            minute, hour, dom, month, dow = entry["cron"].split()
            when: Any = crontab(minute, hour, dow, dom, month)
        else:
            when = float(entry["every"])
        entries[name] = {
            "task": "record",
            "schedule": when,
            "args": (name,),
            "options": entry.get("options", {}),
        }
    return entries


app.conf.beat_schedule = _schedule(json.loads(os.environ.get("TEST_SCHEDULE", "{}")))


@app.task(bind=True, name="record")
def record(self: Any, entry: str) -> None:
    """Log one execution, with the slot headers beat gave the message, to the broker Redis."""
    headers = self.request.headers or {}
    row = {
        "entry": entry,
        "task_id": self.request.id,
        "slot": headers.get(Header.SLOT.value),
        "replica": headers.get(Header.REPLICA.value),
        "at": time.time(),
        "worker": socket.gethostname(),
    }
    client = redis.Redis.from_url(os.environ["TEST_BROKER_URL"])
    client.rpush("executions", json.dumps(row))


class CrashAfterPublish(Scheduler):
    """Dies after publishing a slot of ``TEST_CRASH_ENTRY``, before marking it done."""

    def _published(self, plan: Any, slot: int) -> None:
        if plan.name == os.environ.get("TEST_CRASH_ENTRY"):
            os._exit(17)

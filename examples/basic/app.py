"""A Celery app whose beat runs on every replica: each slot is still sent and run once.

Run on every replica::

    celery -A app beat -S singleton
    celery -A app worker

The masters come from ``SINGLETON_BEAT_REDIS_URLS`` (three independent Redis servers);
the broker from ``BROKER_URL``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery
from celery.schedules import crontab

app = Celery("basic", broker=os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    beat_scheduler="celery_singleton_beat.Scheduler",
    singleton_beat_redis_urls=os.environ.get(
        "SINGLETON_BEAT_REDIS_URLS",
        "redis://127.0.0.1:7001/0,redis://127.0.0.1:7002/0,redis://127.0.0.1:7003/0",
    ),
    singleton_beat_claim_ttl=1.0,
    beat_schedule={
        "refresh-every-2s": {"task": "basic.run", "schedule": 2.0, "args": ("refresh-every-2s",)},
        "report-every-5s": {"task": "basic.run", "schedule": 5.0, "args": ("report-every-5s",)},
        "billing-every-minute": {
            "task": "basic.run",
            "schedule": crontab(),
            "args": ("billing-every-minute",),
        },
    },
)


@app.task(bind=True, name="basic.run")
def run(self: Any, entry: str) -> None:
    """Stand-in for real work: note which slot ran, so the demo can count them."""
    headers = self.request.headers or {}
    note = {
        "entry": entry,
        "slot": headers.get("singleton_beat_slot"),
        "replica": headers.get("singleton_beat_replica"),
        "task_id": self.request.id,
        "at": time.time(),
    }
    client = redis.Redis.from_url(app.conf.broker_url)
    client.rpush("demo:executions", json.dumps(note))

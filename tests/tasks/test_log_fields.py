"""A skipped or dropped run's log line carries its task id, key and holder (host/pid, and
the task id holding a lock; never the lock's token) as fields."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.core import process
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.testing import RedisServer


def test_a_skipped_and_a_dropped_run_log_their_fields(
    redis_cluster: Callable[[int], list[RedisServer]], caplog: pytest.LogCaptureFixture
) -> None:
    master = redis_cluster(1)[0]
    app = Celery("log-fields", broker="memory://", set_as_current=False)
    app.conf.update(singleton_beat_redis_urls=[master.url])

    @app.task(base=SingletonTask, bind=True, name="reports.sync", singleton_key="sync")
    def sync(self: Any) -> None: ...

    holder = Redlock.from_urls([master.url], owner="other-host/7")
    held = holder.acquire("task:sync", ttl=30)
    assert held is not None
    slot = {"singleton_beat_entry": "sync", "singleton_beat_slot": "2026-03-01T12:00:00.000Z"}
    with caplog.at_level(logging.INFO, logger="celery_singleton_beat.tasks.singleton"):
        sync.apply(task_id="skipped-id")
        holder.release(held)
        sync.apply(task_id="slot-id", headers=slot)
        sync.apply(task_id="slot-id", headers=slot)
    skipped, dropped = [
        r for r in caplog.records if r.name == "celery_singleton_beat.tasks.singleton"
    ]
    assert (skipped.task_id, skipped.key, skipped.holder) == (  # type: ignore[attr-defined]
        "skipped-id", "task:sync", "other-host/7"
    )  # fmt: skip
    fields = ("task_id", "entry", "slot", "key")
    assert tuple(getattr(dropped, f) for f in fields) == (
        "slot-id", "sync", "2026-03-01T12:00:00.000Z", "ran:sync:2026-03-01T12:00:00.000Z"
    )  # fmt: skip
    assert dropped.holder == process.owner()  # type: ignore[attr-defined]

"""What a tick costs when nothing is due: at most one round trip, so that a slot falling
due is never kept waiting behind two."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.testing import RedisServer


def counted(calls: list[str], label: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(label)
        return call(*args, **kwargs)

    return wrapper


def test_an_idle_tick_makes_the_heartbeat_or_the_source_poll_never_both(
    redis_cluster: Callable[[int], list[RedisServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    master = redis_cluster(1)[0]
    app = Celery("idle-tick", broker="memory://", set_as_current=False)
    app.conf.update(
        singleton_beat_redis_urls=[master.url],
        beat_schedule={"hourly": {"task": "t", "schedule": 3600.0}},
    )
    sched = Scheduler(app=app)
    calls: list[str] = []
    source = sched._watcher.source
    monkeypatch.setattr(
        sched.store, "heartbeat", counted(calls, "heartbeat", sched.store.heartbeat)
    )
    monkeypatch.setattr(source, "version", counted(calls, "poll", source.version))
    ticks: list[list[str]] = []
    try:
        sched.tick()  # the first tick registers the entry
        end = time.monotonic() + 4.3
        while time.monotonic() < end:
            calls.clear()
            delay = sched.tick()
            ticks.append(list(calls))
            time.sleep(delay)
    finally:
        sched.close()
    assert all(len(done) <= 1 for done in ticks), ticks
    assert ticks.count(["heartbeat"]) >= 4, ticks  # once a second, none late
    # once a second, between heartbeats; a tick woken so late that a heartbeat is due
    # too (a loaded machine) makes the heartbeat and moves that poll on by half a second
    assert ticks.count(["poll"]) >= 3, ticks

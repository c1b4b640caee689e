"""The scheduler in-process on an injected wall clock, over a real Redis master."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.testing import FakeClock, RedisServer
from tests.support.clocked import on_clock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock("2026-01-01T00:00:00")


@pytest.fixture
def make(
    redis_cluster: Callable[[int], list[RedisServer]], clock: FakeClock
) -> Iterator[Callable[..., Scheduler]]:
    master = redis_cluster(1)[0]
    made: list[Scheduler] = []

    def build(schedule: dict[str, Any], monotonic: bool = False, **settings: Any) -> Scheduler:
        """A scheduler of ``schedule`` on ``clock`` (its monotonic clock too: heartbeats
        and reads of the schedule source, with ``monotonic``)."""
        app = Celery("clock-tests", broker="memory://")
        app.conf.update(singleton_beat_redis_urls=[master.url], beat_schedule=schedule, **settings)
        made.append(Scheduler(app=on_clock(app, clock, monotonic=monotonic)))
        return made[-1]

    yield build
    for sched in made:
        sched.close()

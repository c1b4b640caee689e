"""The scheduler in-process on an injected wall clock (:class:`FakeClock`)."""

from __future__ import annotations

import datetime as dt

from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import FakeClock


def on_clock(app: Celery, clock: FakeClock) -> Celery:
    """The app, its scheduler running on ``clock``."""
    Runtime.of(app).clock = clock
    return app


def run(sched: Scheduler, clock: FakeClock, until: str, step: float) -> None:
    end = dt.datetime.fromisoformat(until).replace(tzinfo=dt.timezone.utc).timestamp()
    while clock.now <= end:
        sched.tick()
        clock.now += step

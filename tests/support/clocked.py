"""The scheduler in-process on an injected wall clock (:class:`FakeClock`)."""

from __future__ import annotations

import datetime as dt

from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import FakeClock


def on_clock(app: Celery, clock: FakeClock, *, monotonic: bool = False) -> Celery:
    """The app, its scheduler running on ``clock`` (its monotonic clock too, with
    ``monotonic``: then ``clock`` says when it heartbeats and reads its source)."""
    runtime = Runtime.of(app)
    runtime.clock = clock
    if monotonic:
        runtime.monotonic = clock.monotonic
    return app


def run(sched: Scheduler, clock: FakeClock, until: str, step: float) -> None:
    end = dt.datetime.fromisoformat(until).replace(tzinfo=dt.timezone.utc).timestamp()
    while clock.now <= end:
        sched.tick()
        clock.advance(step)

"""The scheduler in-process on an injected wall clock (:class:`FakeClock`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, signals

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.schema import Header
from celery_singleton_beat.core.slots import jitter_offset
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import FakeClock, RedisServer
from tests.support.clusters import slot_ms

#: The policies a row's headers give in the tests of each row source.
ROW_POLICIES = {"jitter": 5, "slot_kwarg": "scheduled_at", "pause_on_failure": 3}


def on_clock(app: Celery, clock: FakeClock, *, monotonic: bool = False) -> Celery:
    """The app, its scheduler running on ``clock`` (its monotonic clock too, with
    ``monotonic``: then ``clock`` says when it heartbeats and reads its source)."""
    runtime = Runtime.of(app)
    runtime.clock = clock
    if monotonic:
        runtime.monotonic = clock.monotonic
    return app


@contextmanager
def replica_of(
    source: str, master: RedisServer, clock: FakeClock, app: Celery | None = None
) -> Iterator[Scheduler]:
    """A replica of schedule source ``source`` on ``master`` and ``clock`` (its monotonic
    clock too: ``clock`` says when it heartbeats and reads its source); closed at the end."""
    app = app or Celery("clocked", broker="memory://", set_as_current=False)
    app.conf.update(singleton_beat_redis_urls=[master.url], singleton_beat_schedule_source=source)
    sched = Scheduler(app=on_clock(app, clock, monotonic=True))
    try:
        yield sched
    finally:
        sched.close()


def run(sched: Scheduler, clock: FakeClock, until: str, step: float) -> None:
    end = dt.datetime.fromisoformat(until).replace(tzinfo=dt.timezone.utc).timestamp()
    while clock.now <= end:
        sched.tick()
        clock.advance(step)


@contextmanager
def published(clock: FakeClock) -> Iterator[list[Published]]:
    """Each message published in this process meanwhile, as kombu is given it (Celery's
    ``before_task_publish``), with the clock's time then."""
    found: list[Published] = []

    def record(headers: dict[str, Any], body: Any, **_: Any) -> None:
        args, kwargs, _embed = body
        found.append(Published(clock.now, dict(headers), list(args), dict(kwargs)))

    signals.before_task_publish.connect(record, weak=False)
    try:
        yield found
    finally:
        signals.before_task_publish.disconnect(record)


@dataclasses.dataclass(frozen=True)
class Published:
    at: float
    headers: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]


def check_row_policies_sent(sent: list[Published], entry: str, step: float) -> None:
    """Each message of ``entry`` (whose row gives :data:`ROW_POLICIES`) was sent at its
    slot's jitter offset (within one tick of ``step``), with its slot as ``scheduled_at``
    and its failure limit as a header; the row's other headers kept, ours not among them."""
    assert len(sent) >= 3
    for message in sent:
        label = message.headers[Header.SLOT.value]
        offset = jitter_offset(entry, slot_ms(label), 5000) / 1000
        assert slot_ms(label) / 1000 + offset <= message.at < slot_ms(label) / 1000 + offset + step
        assert message.kwargs == {"scheduled_at": label}
        assert message.headers[Header.PAUSE_ON_FAILURE.value] == 3
        assert message.headers["trace"] == "abc"
        assert "singleton_beat" not in message.headers

"""A stop signal that arrives while a slot is published waits until the slot is done."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.schema import ClaimStatus
from celery_singleton_beat.observe import events
from celery_singleton_beat.testing import FakeClock
from tests.support.clocked import run


def stop_as_celery_beat_does(signum: int, frame: FrameType | None) -> None:
    """``celery beat``'s own SIGTERM handler: the scheduler is synced, then SystemExit."""
    raise SystemExit(0)


@pytest.fixture
def celery_beat_signals() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, stop_as_celery_beat_does)
    yield
    signal.signal(signal.SIGTERM, previous)


def sigterm_when_published(event: events.Event) -> None:
    if isinstance(event, events.SlotFired):
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.usefixtures("celery_beat_signals")
def test_sigterm_right_after_a_publish_stops_beat_once_the_slot_is_marked_done(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    sched = make({"tick": {"task": "t", "schedule": 10.0}})
    unsubscribe = events.subscribe(sigterm_when_published)
    try:
        with pytest.raises(SystemExit):
            run(sched, clock, "2026-01-01T00:01:00", step=1)
    finally:
        unsubscribe()
    (sent,) = fired
    slot = round(sent.slot.timestamp() * 1000)
    config = sched.config
    (claim,) = sched.dispatcher.fences.claim(
        [("tick", slot)], "another-replica", config.claim_ttl, config.fence_retention
    )
    assert claim.status == ClaimStatus.DONE, "the slot is marked done before beat stops"
    assert signal.getsignal(signal.SIGTERM) is stop_as_celery_beat_does


@pytest.mark.usefixtures("celery_beat_signals")
def test_a_second_sigterm_stops_beat_at_once(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    sched = make({"tick": {"task": "t", "schedule": 10.0}})

    def twice(event: events.Event) -> None:
        sigterm_when_published(event)
        sigterm_when_published(event)

    unsubscribe = events.subscribe(twice)
    try:
        with pytest.raises(SystemExit):
            run(sched, clock, "2026-01-01T00:01:00", step=1)
    finally:
        unsubscribe()
    (sent,) = fired
    slot = round(sent.slot.timestamp() * 1000)
    config = sched.config
    (claim,) = sched.dispatcher.fences.claim(
        [("tick", slot)], "another-replica", config.claim_ttl, config.fence_retention
    )
    assert claim.status != ClaimStatus.DONE, "stopped at once, before the done mark"

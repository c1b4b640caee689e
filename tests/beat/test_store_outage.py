"""The scheduler in-process on the memory slot store, with an injected store outage (a
real server cannot fail one round trip of a dispatch on cue)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from celery import Celery

from celery_singleton_beat.beat import dispatch
from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.stores import MemorySlotStore
from celery_singleton_beat.stores.base import Claim, Fence

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()


class OutageOnSecondClaim(MemorySlotStore):
    """Answers nothing to the second claim round trip, then recovers."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    def claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[Claim]:
        self.claims += 1
        if self.claims == 2:
            return [Claim(None, 0, {"memory": "ConnectionError: down"}) for _ in fences]
        return super().claim(fences, token, ttl, retention)


def test_entries_of_chunks_not_yet_claimed_when_the_store_failed_fire_after_it_is_back(
    monkeypatch: pytest.MonkeyPatch, fired: list[events.SlotFired]
) -> None:
    monkeypatch.setattr(dispatch, "CLAIM_CHUNK", 2)
    app = Celery("outage", broker="memory://")
    app.conf.update(
        singleton_beat_store=f"{__name__}.OutageOnSecondClaim",
        beat_schedule={f"e{i}": {"task": "t", "schedule": 10.0} for i in range(6)},
    )
    now = [START]
    Runtime.of(app).clock = lambda: now[0]
    sched = Scheduler(app=app)
    try:
        sched.tick()  # registers the entries at 00:00:00
        now[0] = START + 10.2  # the 00:00:10 slot of all six is due: three chunks
        sched.tick()  # the second chunk's claim gets no answer
        for _ in range(16):  # up to 00:00:18.2
            now[0] += 0.5
            sched.tick()
    finally:
        sched.close()
    assert sorted((e.entry, e.slot.timestamp()) for e in fired) == [
        (f"e{i}", START + 10) for i in range(6)
    ]

"""A burst of due entries is looked at a pass's worth at a time, soonest first: each pass
pops no more entries than it dispatches within its budget, instead of popping every due
entry and waking again all it did not reach (which made a burst of 100,000 quadratic)."""

from __future__ import annotations

import datetime as dt

import pytest
from celery import Celery

from celery_singleton_beat.beat import scheduler as beat_scheduler
from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()


def test_a_burst_is_dispatched_a_pass_s_worth_of_entries_per_tick_and_every_slot_is_sent(
    monkeypatch: pytest.MonkeyPatch, fired: list[events.SlotFired]
) -> None:
    monkeypatch.setattr(beat_scheduler, "PASS_ENTRIES", 4)
    app = Celery("burst", broker="memory://")
    schedule = {f"e{i}": {"task": "t", "schedule": 10.0} for i in range(10)}
    schedule["early"] = {"task": "t", "schedule": 3.0}  # due at 00:00:09, before the rest
    app.conf.update(
        singleton_beat_store="celery_singleton_beat.stores.MemorySlotStore", beat_schedule=schedule
    )
    now = [START]
    Runtime.of(app).clock = lambda: now[0]
    sched = Scheduler(app=app)
    per_tick = []
    try:
        sched.tick()  # registers the entries at 00:00:00
        now[0] = START + 10.2  # the 00:00:10 slot of ten entries is due, and "early"'s
        for _ in range(4):
            before = len(fired)
            sched.tick()
            per_tick.append([(e.entry, e.slot.timestamp() - START) for e in fired[before:]])
    finally:
        sched.close()
    assert [len(sent) for sent in per_tick] == [4, 4, 3, 0]
    assert per_tick[0][0] == ("early", 9.0), "the soonest slot is in the first pass"
    sent = [item for tick in per_tick for item in tick]
    assert sorted(sent) == sorted([("early", 9.0)] + [(f"e{i}", 10.0) for i in range(10)])

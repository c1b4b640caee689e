"""A schedule of 100,000 entries on three real masters: every entry initialised, and the
first due slot published, within seconds (read in batches, dispatched while loading)."""

from __future__ import annotations

import time

import pytest
from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.schema import Keys
from celery_singleton_beat.observe import events
from celery_singleton_beat.testing import RedisServer

ENTRIES = 100_000
#: Far from any test run: no slot of these entries falls due while it runs.
RARELY = float(400 * 86400)


def entry_keys(master: RedisServer) -> int:
    """How many entries the master knows."""
    pattern = f"{Keys().entry_prefix}*"
    return sum(1 for _ in master.client().scan_iter(match=pattern, count=10_000))


def noop() -> None:
    """The entries' task."""


@pytest.mark.slow
def test_100000_entries_on_three_masters_are_initialised_and_the_first_due_slot_sent_within_30s(
    three_masters: list[RedisServer], fired: list[events.SlotFired]
) -> None:
    schedule = {f"customer-{i:06d}": {"task": "t", "schedule": RARELY} for i in range(ENTRIES - 1)}
    schedule["every-second"] = {"task": "t", "schedule": 1.0}  # read last of all
    app = Celery("scale", broker="memory://", set_as_current=False)
    app.conf.update(
        singleton_beat_redis_urls=[m.url for m in three_masters], beat_schedule=schedule
    )
    app.task(name="t")(noop)
    started = time.monotonic()
    sched = Scheduler(app=app)
    counted, count_at = [0] * 3, 0.0
    try:
        while time.monotonic() - started < 30:
            time.sleep(min(sched.tick(), 0.05))
            if fired and time.monotonic() >= count_at:  # a count takes ~0.3 s per master
                counted = [entry_keys(m) for m in three_masters]
                count_at = time.monotonic() + 1.0
                if counted == [ENTRIES] * 3:
                    break
        took = time.monotonic() - started
    finally:
        sched.close()
    print(f"100,000 entries: initialised and first slot sent in {took:.1f} s")
    assert [e.entry for e in fired[:1]] == ["every-second"]
    assert counted == [ENTRIES] * 3

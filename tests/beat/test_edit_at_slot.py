"""A schedule edited just before a slot and seen just after it: the slot belongs to the
version in force when it fell due, and is still decided (sent, or counted missed).

The replica ticks at .08 and .58 of each second on a fake clock and heartbeats at .08;
the edit is made at .8, just before a slot, and seen with the heartbeat at .08, just
after it::

    15.58 tick ── 15.8 edit ── 16.0 slot ── 16.08 tick: change seen (the slot is due)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery_singleton_beat import schedule
from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.share import Share
from celery_singleton_beat.core.slots import slot_label
from celery_singleton_beat.observe import events
from celery_singleton_beat.testing import FakeClock
from celery_singleton_beat.testing.clock import epoch
from tests.support.clocked import run
from tests.support.events import EventLog

RUNTIME = {"singleton_beat_schedule_source": ["runtime"]}


def at(seconds: int) -> str:
    return f"2026-01-01T00:00:{seconds:02d}.000Z"


def labels(seen: Sequence[events.SlotFired | events.SlotSkipped], entry: str) -> list[str]:
    return [slot_label(round(e.slot.timestamp() * 1000)) for e in seen if e.entry == entry]


def task() -> None:
    """The task the entry sends (registered in the app, as ``schedule.add`` requires)."""


def replica(
    make: Callable[..., Scheduler],
    clock: FakeClock,
    until: int = 16,
    settings: dict[str, Any] | None = None,
    **fields: Any,
) -> Scheduler:
    """A replica of the runtime entry ``e`` (``fields``), run up to its last tick before
    ``until`` (00:00:15.58 for 16)."""
    clock.now = epoch("2026-01-01T00:00:00.08")
    sched = make({}, monotonic=True, **RUNTIME, **(settings or {}))
    sched.app.task(name="t", shared=False)(task)
    schedule.add(sched.app, "e", "t", **fields)
    run(sched, clock, f"2026-01-01T00:00:{until - 1:02d}.6", step=0.5)
    return sched


def test_an_interval_shortened_just_before_a_slot_still_sends_that_slot(
    make: Callable[..., Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    sched = replica(make, clock, every=8)
    schedule.update(sched.app, "e", every=4)
    run(sched, clock, "2026-01-01T00:00:24.1", step=0.5)
    assert labels(fired, "e") == [at(8), at(16), at(20), at(24)]


def test_an_interval_lengthened_just_before_a_slot_of_only_the_old_one_still_sends_it(
    make: Callable[..., Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    sched = replica(make, clock, until=12, every=4)
    schedule.update(sched.app, "e", every=8)
    run(sched, clock, "2026-01-01T00:00:24.1", step=0.5)
    assert labels(fired, "e") == [at(4), at(8), at(12), at(16), at(24)]


def test_an_entry_removed_just_before_a_slot_still_sends_that_slot_and_no_later_one(
    make: Callable[..., Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    sched = replica(make, clock, every=8)
    schedule.remove(sched.app, "e")
    run(sched, clock, "2026-01-01T00:00:32.1", step=0.5)
    assert labels(fired, "e") == [at(8), at(16)]


def test_a_slot_of_another_replicas_share_due_when_the_edit_is_seen_is_still_sent(
    make: Callable[..., Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    """From 12.08 entry ``e`` is in the share of another replica (``owner``, dead: it
    sends nothing), so this replica looks at its slots only once late by the share grace;
    the edit is seen at 16.08, before 16 is late by the grace: 16 is still decided here."""
    sched = replica(make, clock, until=12, settings={"singleton_beat_share_grace": 1.0}, every=8)
    owner = next(
        name
        for name in (f"owner:{n}" for n in range(100))
        if not Share(sched.replica, [sched.replica, name]).owns("e")
    )
    sched.store.sharing = lambda within: sorted([sched.replica, owner])  # type: ignore[method-assign]
    run(sched, clock, "2026-01-01T00:00:15.6", step=0.5)
    assert sched.dispatcher.share is not None and not sched.dispatcher.share.owns("e")
    schedule.update(sched.app, "e", every=4)
    run(sched, clock, "2026-01-01T00:00:20.1", step=0.5)
    assert labels(fired, "e") == [at(8), at(16)], "16 decided when the edit was seen"


def test_the_new_version_owes_the_slots_after_the_moment_the_change_was_seen(
    make: Callable[..., Scheduler], clock: FakeClock, event_log: EventLog
) -> None:
    """What the dashboard counts as expected: the old version's slots up to the new
    version's ``since``, then the new version's; each of them was sent."""
    scheduled = event_log.of(events.EntryScheduled)
    fired = event_log.of(events.SlotFired)
    sched = replica(make, clock, every=8)
    schedule.update(sched.app, "e", every=4)
    run(sched, clock, "2026-01-01T00:00:24.1", step=0.5)
    since = [e.since.timestamp() for e in scheduled if e.entry == "e"]
    assert since == [epoch("2026-01-01T00:00:00.08"), epoch("2026-01-01T00:00:16.08")]
    sent = [e.slot.timestamp() for e in fired]
    assert [s for s in sent if s <= since[1]] == [epoch(at(8)), epoch(at(16))]


def test_a_slot_of_the_old_schedule_another_replica_held_is_sent_if_that_replica_gives_it_up(
    make: Callable[..., Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    """Another replica claimed slot 16 of the old schedule and gave it back (its publish
    failed): the changed entry still looks at it, and sends it."""
    sched = replica(make, clock, every=8)
    slot = round(epoch(at(16)) * 1000)
    other = sched.store.claim([("e", slot)], "other", 30.0, 3600.0)
    assert other[0].status is not None
    schedule.update(sched.app, "e", every=4)
    run(sched, clock, "2026-01-01T00:00:16.1", step=0.5)
    assert labels(fired, "e") == [at(8)], "held by the other replica"
    sched.store.unclaim([("e", slot)], "other")
    run(sched, clock, "2026-01-01T00:00:20.1", step=0.5)
    assert labels(fired, "e") == [at(8), at(16), at(20)]


def test_a_paused_entry_changed_counts_the_slots_its_old_schedule_passed_as_missed(
    make: Callable[..., Scheduler], clock: FakeClock, event_log: EventLog
) -> None:
    """Paused after 00:00:04; 8 and 12 pass; changed to every 8 s (seen at 13.08): 8 and
    12 are counted missed then, as the old schedule's; on resume (17.08) the new
    schedule's 16 is sent late (misfire ``coalesce``)."""
    fired = event_log.of(events.SlotFired)
    skipped = event_log.of(events.SlotSkipped)
    sched = replica(make, clock, until=6, every=4)
    schedule.pause(sched.app, "e")
    run(sched, clock, "2026-01-01T00:00:12.6", step=0.5)
    schedule.update(sched.app, "e", every=8)
    run(sched, clock, "2026-01-01T00:00:16.6", step=0.5)
    assert labels(skipped, "e") == [at(12)]
    assert [(e.count, e.reason) for e in skipped] == [(2, "misfire")]
    schedule.resume(sched.app, "e")
    run(sched, clock, "2026-01-01T00:00:24.1", step=0.5)
    assert labels(fired, "e") == [at(4), at(16), at(24)]

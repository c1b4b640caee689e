"""The scheduler in-process with an injected wall clock, over a real Redis master."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab
from kombu import Producer

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.slots import slot_label
from celery_singleton_beat.observe import events
from celery_singleton_beat.testing import FakeClock, RedisServer
from tests.support.clocked import on_clock, run
from tests.support.events import EventLog

BERLIN = {"singleton_beat": {"timezone": "Europe/Berlin"}}


def labels(fired: list[events.SlotFired], entry: str) -> list[str]:
    return [slot_label(round(e.slot.timestamp() * 1000)) for e in fired if e.entry == entry]


def test_spring_forward_in_berlin_fires_the_0230_slot_once(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    clock.now = FakeClock("2026-03-28T22:00:00").now
    sched = make(
        {"night": {"task": "t", "schedule": crontab(minute=30, hour=2), "options": BERLIN}}
    )
    run(sched, clock, "2026-03-29T04:00:00", step=20)
    assert labels(fired, "night") == ["2026-03-29T01:30:00.000Z"]


def test_fall_back_in_berlin_fires_hourly_slots_in_both_passes_of_the_repeated_hour(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    clock.now = FakeClock("2026-10-24T22:30:00").now
    sched = make({"hourly": {"task": "t", "schedule": crontab(minute=0), "options": BERLIN}})
    run(sched, clock, "2026-10-25T03:00:00", step=20)
    assert labels(fired, "hourly") == [
        "2026-10-24T23:00:00.000Z",
        "2026-10-25T00:00:00.000Z",  # 02:00 CEST
        "2026-10-25T01:00:00.000Z",  # 02:00 CET
        "2026-10-25T02:00:00.000Z",
        "2026-10-25T03:00:00.000Z",
    ]


def test_fall_back_in_los_angeles_every_five_minutes_fires_24_times_in_the_repeated_hour(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    clock.now = FakeClock("2026-11-01T07:58:00").now
    los_angeles = {"singleton_beat": {"timezone": "America/Los_Angeles"}}
    sched = make(
        {
            "five": {"task": "t", "schedule": crontab(minute="*/5"), "options": los_angeles},
            "night": {"task": "t", "schedule": crontab(minute=30, hour=1), "options": los_angeles},
        }
    )
    run(sched, clock, "2026-11-01T10:00:00", step=20)
    assert labels(fired, "five") == [
        f"2026-11-01T{h:02d}:{m:02d}:00.000Z" for h in (8, 9) for m in range(0, 60, 5)
    ] + ["2026-11-01T10:00:00.000Z"]
    assert labels(fired, "night") == ["2026-11-01T08:30:00.000Z"]


def test_entries_added_removed_and_changed_between_restarts(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    first = make({"a": {"task": "t", "schedule": 10.0}, "gone": {"task": "t", "schedule": 10.0}})
    run(first, clock, "2026-01-01T00:00:35", step=0.5)
    first.close()
    assert labels(fired, "a") == [f"2026-01-01T00:00:{s}.000Z" for s in ("10", "20", "30")]

    clock.now += 12  # down from 00:00:35.5 to 00:00:47.5: the 00:00:40 slot is missed
    second = make({"a": {"task": "t", "schedule": 10.0}, "new": {"task": "t", "schedule": 10.0}})
    run(second, clock, "2026-01-01T00:01:05", step=0.5)
    second.close()
    assert labels(fired, "a")[3:] == [
        "2026-01-01T00:00:40.000Z",  # coalesced: the latest missed slot, fired once
        "2026-01-01T00:00:50.000Z",
        "2026-01-01T00:01:00.000Z",
    ]
    assert labels(fired, "new") == ["2026-01-01T00:00:50.000Z", "2026-01-01T00:01:00.000Z"], (
        "first seen at 00:47.5: no slot before that fires"
    )
    assert len(labels(fired, "gone")) == 3

    third = make({"a": {"task": "t", "schedule": 5.0}})
    run(third, clock, "2026-01-01T00:01:20", step=0.5)
    assert labels(fired, "a")[6:] == [
        "2026-01-01T00:01:05.000Z",
        "2026-01-01T00:01:10.000Z",
        "2026-01-01T00:01:15.000Z",
        "2026-01-01T00:01:20.000Z",
    ], "a changed interval continues after the last slot handled, on its own anchor"


#: kombu >= 5.7 sends a batch of messages in one pipeline; older kombu publishes each at once
KOMBU_HAS_BATCH = hasattr(Producer, "batch")


@pytest.mark.skipif(not KOMBU_HAS_BATCH, reason="kombu < 5.7 publishes each message at once")
def test_a_batch_that_never_reaches_the_broker_is_retried_and_not_counted(
    redis_cluster: Callable[[int], list[RedisServer]],
    clock: FakeClock,
    fired: list[Any],
    event_log: EventLog,
) -> None:
    import contextlib

    import redis

    master = redis_cluster(1)[0]
    broker = f"redis://127.0.0.1:{master.port}/1"
    app = Celery("batch-tests", broker=broker)
    schedule = {f"e{i}": {"task": "t", "schedule": 10.0} for i in range(3)}
    app.conf.update(singleton_beat_redis_urls=[master.url], beat_schedule=schedule)
    sched = Scheduler(app=on_clock(app, clock))
    queue = redis.Redis.from_url(broker)
    skipped = event_log.of(events.SlotSkipped)
    real = sched.publish_batch

    @contextlib.contextmanager
    def lost_on_flush() -> Iterator[None]:
        batch = real()
        batch.__enter__()
        yield
        # what kombu does when the pipeline cannot be sent: the buffer is discarded
        batch.__exit__(ConnectionError, ConnectionError("broker gone"), None)
        raise ConnectionError("broker gone")

    try:
        sched.tick()
        clock.now += 10
        sched.publish_batch = lost_on_flush  # type: ignore[method-assign]
        sched.tick()
        assert fired == []
        assert sorted(e.entry for e in skipped) == ["e0", "e1", "e2"]
        assert {e.reason for e in skipped} == {"publish_failed"}
        assert "broker gone" in skipped[0].detail
        assert queue.llen("celery") == 0

        sched.publish_batch = real  # type: ignore[method-assign]
        clock.now += 1.5
        sched.tick()
        assert sorted(e.entry for e in fired) == ["e0", "e1", "e2"]
        assert {e.slot for e in fired} == {e.slot for e in skipped}, "the same slots, retried"
        assert queue.llen("celery") == 3, "each message reached the broker once"
    finally:
        queue.close()
        sched.close()


@pytest.mark.skipif(KOMBU_HAS_BATCH, reason="kombu >= 5.7 publishes a chunk as one batch")
def test_without_batches_a_message_that_fails_to_publish_is_retried_alone(
    redis_cluster: Callable[[int], list[RedisServer]],
    clock: FakeClock,
    fired: list[Any],
    event_log: EventLog,
) -> None:
    """Older kombu publishes message by message: the ones sent count, the failed one is
    retried on its own, with the same slot."""
    import redis

    master = redis_cluster(1)[0]
    broker = f"redis://127.0.0.1:{master.port}/1"
    app = Celery("per-message-tests", broker=broker)
    schedule = {f"e{i}": {"task": "t", "schedule": 10.0} for i in range(3)}
    app.conf.update(singleton_beat_redis_urls=[master.url], beat_schedule=schedule)
    sched = Scheduler(app=app)
    queue = redis.Redis.from_url(broker)
    skipped = event_log.of(events.SlotSkipped)
    real = sched.publish_slot

    def broker_refuses_e1(plan: Any, slot: int) -> str:
        if plan.name == "e1":
            raise ConnectionError("broker gone")
        return real(plan, slot)

    try:
        sched.tick()
        clock.now += 10
        fired.clear()
        before = queue.llen("celery")
        sched.publish_slot = broker_refuses_e1  # type: ignore[method-assign]
        sched.tick()
        assert sorted(e.entry for e in fired) == ["e0", "e2"]
        assert [(e.entry, e.reason) for e in skipped] == [("e1", "publish_failed")]
        assert "broker gone" in skipped[0].detail
        assert queue.llen("celery") - before == 2

        sched.publish_slot = real  # type: ignore[method-assign]
        clock.now += 1.5
        sched.tick()
        assert sorted(e.entry for e in fired) == ["e0", "e1", "e2"]
        assert fired[-1].slot == skipped[0].slot, "the same slot, retried"
        assert queue.llen("celery") - before == 3, "each message reached the broker once"
    finally:
        queue.close()
        sched.close()

"""Schedule policies in-process on an injected wall clock, over a real Redis master: start
and end times, jitter, a crontab's own zone, and the same settings on runtime entries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.decide import SlotView, Verdict, decide
from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.core.slots import jitter_offset, slot_label
from celery_singleton_beat.observe import events
from celery_singleton_beat.ops.cluster import plan_in_words
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.sources.schedule_document import to_beat
from celery_singleton_beat.testing import FakeClock, RedisServer
from celery_singleton_beat.testing.clock import epoch

UTC = dt.timezone.utc


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock("2026-01-01T00:00:00")


@pytest.fixture
def make(
    redis_cluster: Callable[[int], list[RedisServer]], clock: FakeClock
) -> Iterator[Callable[[dict[str, Any]], Scheduler]]:
    """Replicas on one master and ``clock``, each with the schedule given."""
    master = redis_cluster(1)[0]
    made: list[Scheduler] = []

    def build(schedule: dict[str, Any]) -> Scheduler:
        app = Celery("policy-tests", broker="memory://")
        app.conf.update(singleton_beat_redis_urls=[master.url], beat_schedule=schedule)
        Runtime.of(app).clock = clock
        made.append(Scheduler(app=app))
        return made[-1]

    yield build
    for sched in made:
        sched.close()


@pytest.fixture
def sends(clock: FakeClock) -> Iterator[list[tuple[str, str, float]]]:
    """Each slot sent: its entry, its label and the clock's time when it was sent."""
    found: list[tuple[str, str, float]] = []

    def record(event: events.Event) -> None:
        if isinstance(event, events.SlotFired):
            slot = round(event.slot.timestamp() * 1000)
            found.append((event.entry, slot_label(slot), clock.now))

    unsubscribe = events.subscribe(record)
    yield found
    unsubscribe()


def run(replicas: list[Scheduler], clock: FakeClock, until: str, step: float) -> None:
    end = epoch(until)
    while clock.now <= end:
        for sched in replicas:
            sched.tick()
        clock.now += step


def policy(**settings: Any) -> dict[str, Any]:
    return {"singleton_beat": settings}


def test_start_and_end_time_bound_an_interval_entry_counted_from_its_start(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, sends: list[Any]
) -> None:
    bounds = policy(start_time="2026-01-01T00:05:30Z", end_time="2026-01-01T01:09:30+01:00")
    sched = make({"tick": {"task": "t", "schedule": 60, "options": bounds}})
    run([sched], clock, "2026-01-01T00:15:00", step=10)
    assert [label for _e, label, _at in sends] == [
        f"2026-01-01T00:0{m}:30.000Z" for m in (5, 6, 7, 8)
    ]


def test_start_and_end_time_bound_a_crontab_entry(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, sends: list[Any]
) -> None:
    start = dt.datetime(2026, 1, 1, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    bounds = policy(start_time=start, end_time="2026-01-01T04:00:00Z")
    sched = make({"hourly": {"task": "t", "schedule": crontab(minute=0), "options": bounds}})
    run([sched], clock, "2026-01-01T06:00:00", step=60)
    assert [label for _e, label, _at in sends] == [
        "2026-01-01T02:00:00.000Z",
        "2026-01-01T03:00:00.000Z",
    ]


def test_jitter_sends_each_slot_at_its_own_offset_once_over_two_replicas(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, sends: list[Any]
) -> None:
    herd = {
        f"herd-{n}": {"task": "t", "schedule": 60, "options": policy(jitter=5)} for n in range(20)
    }
    replicas = [make(herd), make(herd)]
    run(replicas, clock, "2026-01-01T00:02:10", step=0.25)

    assert len(sends) == 40 == len({(entry, label) for entry, label, _at in sends})
    for entry, label, at in sends:
        slot = round(epoch(label.rstrip("Z")) * 1000)
        assert slot % 60_000 == 0  # the scheduled time is what is recorded
        offset = jitter_offset(entry, slot, 5000) / 1000
        assert slot / 1000 + offset <= at < slot / 1000 + offset + 0.25
    lateness = [at - epoch(label.rstrip("Z")) for _e, label, at in sends]
    assert max(lateness) - min(lateness) > 3.5


def test_a_jittered_slot_sent_within_its_offset_is_on_time_whatever_the_misfire_policy() -> None:
    view = SlotView(60_000, newest=False, resumed=False, offset=4_000)
    assert decide(view, 0, 64_500, "skip", 300.0) is Verdict.FIRE
    assert decide(view, 0, 66_000, "skip", 300.0) is Verdict.SKIP


def test_a_crontab_made_with_nowfun_runs_in_the_zone_nowfun_reads(
    make: Callable[[dict[str, Any]], Scheduler], clock: FakeClock, sends: list[Any]
) -> None:
    tokyo = crontab(minute=0, hour=9, nowfun=lambda: dt.datetime.now(ZoneInfo("Asia/Tokyo")))
    sched = make({"morning": {"task": "t", "schedule": tokyo}})
    run([sched], clock, "2026-01-02T01:00:00", step=300)
    assert [label for _e, label, _at in sends] == ["2026-01-02T00:00:00.000Z"]


def test_a_runtime_entry_carries_its_zone_bounds_jitter_and_failure_limit() -> None:
    app = Celery("runtime-policies", broker="memory://")
    stored = {
        "task": "t", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "jitter": 3,
        "start_time": "2026-03-01T00:00:00+00:00", "end_time": "2026-04-01T00:00:00+00:00",
        "slot_kwarg": "scheduled_at", "pause_on_failure": 2,
    }  # fmt: skip
    plan = Plan.build(Entry(name="nightly", app=app, **to_beat(stored)), app.timezone, 300.0)

    first = plan.slots.next_after(0)
    assert first is not None and slot_label(first) == "2026-03-01T01:30:00.000Z"
    # 02:30 on the spring-forward night in Berlin runs at 03:30 CEST, as cron does
    assert slot_label(plan.slots.next_after(round(epoch("2026-03-29T00:00:00") * 1000)) or 0) == (
        "2026-03-29T01:30:00.000Z"
    )
    assert plan.slots.next_after(round(epoch("2026-03-31T01:30:00") * 1000)) is None
    assert (plan.policy.jitter, plan.policy.slot_kwarg, plan.policy.pause_on_failure) == (
        3, "scheduled_at", 2,
    )  # fmt: skip


def test_status_words_name_the_zone_bounds_and_jitter_of_an_entry() -> None:
    app = Celery("words", broker="memory://")
    settings = policy(timezone="Europe/Berlin", start_time="2026-12-24T18:00:00+01:00",
                      end_time="2027-01-06T00:00:00Z", jitter=5)  # fmt: skip
    entry = Entry(
        name="n", app=app, task="t", schedule=crontab(minute=30, hour=2), options=settings
    )
    assert plan_in_words(Plan.build(entry, app.timezone, 300.0), app.timezone) == (
        "At 02:30 AM (30 2 * * *), Europe/Berlin, from 2026-12-24T17:00:00.000Z, "
        "until 2027-01-06T00:00:00.000Z, jitter 5 s"
    )

"""Slot times, computed without any clock: intervals, crontab (across DST) and solar."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab, schedule, solar

from celery_singleton_beat.core.slots import (
    CronSlots,
    IntervalSlots,
    SolarSlots,
    interval_slots,
    slot_label,
    slots_for,
)

BERLIN = ZoneInfo("Europe/Berlin")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
UTC = dt.timezone.utc


def ms(text: str, tz: dt.tzinfo = UTC) -> int:
    return round(dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp() * 1000)


def walk(slots: CronSlots, start: int, end: int) -> list[str]:
    """Every slot in (start, end] as UTC labels."""
    found, t = [], start
    while (t := slots.next_after(t)) is not None and t <= end:  # type: ignore[assignment]
        found.append(slot_label(t))
    return found


def test_interval_slots_are_anchor_plus_whole_intervals() -> None:
    slots = IntervalSlots(every_ms=10_000, anchor_ms=5_000)
    assert slots.next_after(5_000) == 15_000
    assert slots.next_after(14_999) == 15_000
    assert slots.next_after(15_000) == 25_000
    assert slots.next_after(-100_000) == -95_000


def test_interval_slots_count_those_strictly_after_and_up_to() -> None:
    slots = IntervalSlots(every_ms=1_000, anchor_ms=0)
    assert slots.count_between(0, 10_000) == 10
    assert slots.count_between(500, 3_500) == 3
    assert slots.count_between(3_000, 3_000) == 0


def test_crontab_slots_match_the_expression_in_utc() -> None:
    slots = CronSlots(crontab(minute="*/15", hour="9-10"), UTC)
    assert walk(slots, ms("2026-06-01T09:07"), ms("2026-06-02T09:16")) == [
        "2026-06-01T09:15:00.000Z", "2026-06-01T09:30:00.000Z", "2026-06-01T09:45:00.000Z",
        "2026-06-01T10:00:00.000Z", "2026-06-01T10:15:00.000Z", "2026-06-01T10:30:00.000Z",
        "2026-06-01T10:45:00.000Z", "2026-06-02T09:00:00.000Z", "2026-06-02T09:15:00.000Z",
    ]  # fmt: skip


def test_crontab_day_of_week_and_month_both_restrict() -> None:
    slots = CronSlots(crontab(minute=0, hour=6, day_of_week="mon", month_of_year="2"), UTC)
    assert walk(slots, ms("2027-01-30T00:00"), ms("2027-03-10T00:00")) == [
        "2027-02-01T06:00:00.000Z", "2027-02-08T06:00:00.000Z",
        "2027-02-15T06:00:00.000Z", "2027-02-22T06:00:00.000Z",
    ]  # fmt: skip


def test_a_leap_day_crontab_finds_the_next_leap_year() -> None:
    slots = CronSlots(crontab(minute=0, hour=0, day_of_month=29, month_of_year=2), UTC)
    assert slots.next_after(ms("2026-01-01T00:00")) == ms("2028-02-29T00:00")


def test_spring_forward_fires_the_skipped_wall_clock_time_once() -> None:
    # Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    slots = CronSlots(crontab(minute=30, hour=2), BERLIN)
    fired = walk(slots, ms("2026-03-28T12:00"), ms("2026-03-30T12:00"))
    assert fired == ["2026-03-29T01:30:00.000Z", "2026-03-30T00:30:00.000Z"]


def test_spring_forward_half_hourly_slots_are_each_fired_once_in_order() -> None:
    slots = CronSlots(crontab(minute="*/30"), BERLIN)
    fired = walk(slots, ms("2026-03-28T23:59"), ms("2026-03-29T02:00"))
    assert fired == [
        "2026-03-29T00:00:00.000Z",  # 01:00 CET
        "2026-03-29T00:30:00.000Z",  # 01:30 CET
        "2026-03-29T01:00:00.000Z",  # 02:00 (skipped wall time) = 03:00 CEST
        "2026-03-29T01:30:00.000Z",  # 02:30 (skipped wall time) = 03:30 CEST
        "2026-03-29T02:00:00.000Z",  # 04:00 CEST
    ]


def test_fall_back_fires_the_repeated_wall_clock_time_once() -> None:
    # Berlin, 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    slots = CronSlots(crontab(minute=30, hour=2), BERLIN)
    fired = walk(slots, ms("2026-10-24T12:00"), ms("2026-10-26T12:00"))
    assert fired == ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]


def test_fall_back_hourly_slots_fire_in_both_passes_of_the_repeated_hour() -> None:
    # Cron's rule: an entry whose hour is a wildcard fires at every real instant.
    slots = CronSlots(crontab(minute=0), BERLIN)
    fired = walk(slots, ms("2026-10-24T22:30"), ms("2026-10-25T03:00"))
    assert fired == [
        "2026-10-24T23:00:00.000Z",  # 01:00 CEST
        "2026-10-25T00:00:00.000Z",  # 02:00 CEST, the first 02:00
        "2026-10-25T01:00:00.000Z",  # 02:00 CET, the second 02:00
        "2026-10-25T02:00:00.000Z",  # 03:00 CET
        "2026-10-25T03:00:00.000Z",  # 04:00 CET
    ]


def every_five_minutes(start: str, end: str) -> list[str]:
    """UTC labels every 5 minutes in [start, end]."""
    t, stop, found = ms(start), ms(end), []
    while t <= stop:
        found.append(slot_label(t))
        t += 300_000
    return found


def test_los_angeles_fall_back_every_five_minutes_fires_through_both_passes() -> None:
    # 1 November 2026: 02:00 PDT (09:00Z) falls back to 01:00 PST; 01:00-01:59 happens
    # twice, 08:00Z-08:59Z (PDT) and 09:00Z-09:59Z (PST).
    slots = CronSlots(crontab(minute="*/5"), LOS_ANGELES)
    fired = walk(slots, ms("2026-11-01T07:50"), ms("2026-11-01T10:10"))
    assert fired == every_five_minutes("2026-11-01T07:55", "2026-11-01T10:10")
    repeated = [f for f in fired if "T08:" in f or "T09:" in f]
    assert len(repeated) == 24


def test_los_angeles_fall_back_fixed_hour_fires_once_at_the_first_pass() -> None:
    slots = CronSlots(crontab(minute=30, hour=1), LOS_ANGELES)
    fired = walk(slots, ms("2026-10-31T00:00"), ms("2026-11-02T23:00"))
    assert fired == [
        "2026-10-31T08:30:00.000Z",  # 01:30 PDT
        "2026-11-01T08:30:00.000Z",  # 01:30 PDT, the first 01:30 only
        "2026-11-02T09:30:00.000Z",  # 01:30 PST
    ]


def test_los_angeles_fall_back_hourly_fires_at_both_one_oclocks() -> None:
    slots = CronSlots(crontab(minute=0), LOS_ANGELES)
    fired = walk(slots, ms("2026-11-01T06:30"), ms("2026-11-01T11:00"))
    assert fired == [
        "2026-11-01T07:00:00.000Z",  # 00:00 PDT
        "2026-11-01T08:00:00.000Z",  # 01:00 PDT
        "2026-11-01T09:00:00.000Z",  # 01:00 PST
        "2026-11-01T10:00:00.000Z",  # 02:00 PST
        "2026-11-01T11:00:00.000Z",  # 03:00 PST
    ]


def test_los_angeles_spring_forward_every_five_minutes_follows_real_time() -> None:
    # 8 March 2026: 02:00 PST (10:00Z) jumps to 03:00 PDT; there is no 02:xx.
    slots = CronSlots(crontab(minute="*/5"), LOS_ANGELES)
    fired = walk(slots, ms("2026-03-08T09:40"), ms("2026-03-08T10:20"))
    assert fired == every_five_minutes("2026-03-08T09:45", "2026-03-08T10:20")


def test_los_angeles_spring_forward_fixed_hour_and_hourly() -> None:
    half_past_one = CronSlots(crontab(minute=30, hour=1), LOS_ANGELES)
    assert walk(half_past_one, ms("2026-03-07T00:00"), ms("2026-03-09T23:00")) == [
        "2026-03-07T09:30:00.000Z",  # 01:30 PST
        "2026-03-08T09:30:00.000Z",  # 01:30 PST, before the change
        "2026-03-09T08:30:00.000Z",  # 01:30 PDT
    ]
    hourly = CronSlots(crontab(minute=0), LOS_ANGELES)
    assert walk(hourly, ms("2026-03-08T07:30"), ms("2026-03-08T12:00")) == [
        "2026-03-08T08:00:00.000Z",  # 00:00 PST
        "2026-03-08T09:00:00.000Z",  # 01:00 PST
        "2026-03-08T10:00:00.000Z",  # 03:00 PDT (02:00 does not happen)
        "2026-03-08T11:00:00.000Z",  # 04:00 PDT
        "2026-03-08T12:00:00.000Z",  # 05:00 PDT
    ]


def test_solar_slots_are_the_same_whatever_the_start_before_the_event() -> None:
    slots = SolarSlots(solar("sunrise", 52.52, 13.40))
    early = slots.next_after(ms("2026-06-21T00:00"))
    later = slots.next_after(ms("2026-06-21T01:30"))
    assert early == later
    assert early % 1000 == 0
    assert slot_label(early).startswith("2026-06-21T02:4")  # Berlin sunrise, ~04:43 CEST
    assert slots.next_after(early) > early + 23 * 3600 * 1000


def test_a_plan_finds_the_slot_before_another_for_intervals_and_crontab() -> None:
    from celery import Celery

    from celery_singleton_beat.core.entries import Entry, Plan

    app = Celery("plans", broker="memory://")
    hourly = Entry(name="hourly", task="t", schedule=crontab(minute=0), app=app)
    plan = Plan.build(hourly, UTC, grace=300)
    three = ms("2026-06-01T03:00")
    assert plan.slot_before(three, after=ms("2026-06-01T00:30")) == ms("2026-06-01T02:00")
    assert plan.slot_before(three, after=ms("2026-06-01T02:30")) == three, "none in between"
    every = Plan.build(Entry(name="e", task="t", schedule=10.0, app=app), UTC, grace=300)
    assert every.slot_before(50_000, after=0) == 40_000
    assert every.slot_before(50_000, after=45_000) == 50_000
    assert every.missed_between(0, 50_000) == 4


def test_entries_of_one_interval_and_anchor_share_their_slots_which_never_change() -> None:
    hourly = [slots_for(f"customer-{i}", schedule(dt.timedelta(hours=1)), UTC) for i in range(3)]
    assert hourly[0] is hourly[1] is hourly[2]
    assert interval_slots(3_600_000, 7) is interval_slots(3_600_000, 7) is not hourly[0]
    with pytest.raises(AttributeError, match="never change"):
        hourly[0].anchor_ms = 7  # type: ignore[attr-defined]

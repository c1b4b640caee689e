"""sqlalchemy-celery-beat's rows as entries, read in this process on SQLite, PostgreSQL and
MariaDB: what each field becomes, the message as its own scheduler sends it, the change
table as the version, and each slot counted once."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.schedules import crontab, solar
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTaskChanged,
    SolarSchedule,
)
from sqlalchemy_celery_beat.schedulers import ModelEntry

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.connections.sqlalchemy import engine_for
from celery_singleton_beat.core.slots import SlotSchedule, schedule_tz, slot_label, slots_for
from celery_singleton_beat.observe import events
from celery_singleton_beat.sources.periodic_tasks import ONE_OFF_DELAY
from celery_singleton_beat.sources.sqlalchemy_celery_beat import SqlAlchemyCeleryBeatSource
from celery_singleton_beat.testing import FakeClock
from tests.support.clocked import (
    ROW_POLICIES,
    check_row_policies_sent,
    on_clock,
    published,
    replica_of,
    run,
)

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def app(sqlalchemy_url: str) -> Iterator[Celery]:
    made = Celery("rows", broker="memory://")
    made.conf.update(beat_dburi=sqlalchemy_url, timezone="Europe/Paris")
    yield made
    with engine_for(sqlalchemy_url).begin() as connection:
        PeriodicTask.metadata.drop_all(
            connection.execution_options(schema_translate_map={"celery_schema": None})
        )


@pytest.fixture
def session(app: Celery) -> Iterator[Session]:
    engine = engine_for(app.conf.beat_dburi).execution_options(
        schema_translate_map={"celery_schema": None}
    )
    PeriodicTask.metadata.create_all(engine)
    with sessionmaker(engine, expire_on_commit=False)() as made:
        yield made


def add(session: Session, name: str, schedule: Any, **fields: Any) -> PeriodicTask:
    session.add(schedule)
    session.flush()
    row = PeriodicTask(name=name, task="proj.report", **fields)
    row.schedule_model = schedule
    session.add(row)
    session.commit()
    return row


def ms(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)


def test_each_kind_of_row_becomes_the_entry_its_fields_say(app: Celery, session: Session) -> None:
    add(session, "every", IntervalSchedule(every=90, period="seconds"),
        args='["a", 1]', kwargs='{"k": true}', queue="reports", exchange="ex",
        routing_key="rk", priority=7, headers='{"tenant": "acme"}', expire_seconds=30)  # fmt: skip
    add(session, "cron", CrontabSchedule(minute="30", hour="9", timezone="America/New_York"))
    add(session, "sun", SolarSchedule(event="sunrise", latitude=48.85, longitude=2.35))
    at = NOW + dt.timedelta(hours=1)
    add(session, "clocked", ClockedSchedule(clocked_time=at), one_off=True)
    start, end = NOW + dt.timedelta(minutes=10), NOW + dt.timedelta(minutes=20)
    add(session, "bounded", IntervalSchedule(every=5, period="minutes"), start_time=start,
        expires=end)  # fmt: skip
    add(session, "off", IntervalSchedule(every=1, period="seconds"), enabled=False)

    entries = SqlAlchemyCeleryBeatSource(app).entries()

    assert sorted(entries) == ["bounded", "clocked", "cron", "every", "sun"]
    every = entries["every"]
    assert (every["task"], every["args"], every["kwargs"]) == ("proj.report", ["a", 1], {"k": True})
    assert every["options"] == {
        "queue": "reports", "exchange": "ex", "routing_key": "rk", "priority": 7,
        "expires": 30, "headers": {"tenant": "acme"}, "periodic_task_name": "every",
    }  # fmt: skip
    assert every["schedule"].run_every == dt.timedelta(seconds=90)
    cron = entries["cron"]["schedule"]
    assert isinstance(cron, crontab) and cron.tz == ZoneInfo("America/New_York")
    first = slots_for("cron", cron, schedule_tz(cron, app.timezone)).next_after(ms(NOW))
    assert first is not None
    wall = dt.datetime.fromtimestamp(first / 1000, ZoneInfo("America/New_York"))
    assert (wall.hour, wall.minute) == (9, 30), "the crontab's own zone, not the app's"
    assert isinstance(entries["sun"]["schedule"], solar)
    clocked = entries["clocked"]["schedule"]
    assert isinstance(clocked, SlotSchedule)
    assert clocked.slots.next_after(0) == ms(at)
    assert clocked.slots.next_after(ms(at)) is None
    bounded = entries["bounded"]["schedule"].slots
    assert bounded.next_after(0) == -(-ms(start) // 300_000) * 300_000, "none before start_time"
    assert bounded.next_after(ms(end) - 1) is None, "no slot from expires on"
    assert entries["bounded"]["options"]["expires"] == end.astimezone(ZoneInfo("Europe/Paris"))


def test_the_message_is_the_one_its_own_scheduler_sends(app: Celery, session: Session) -> None:
    expires = NOW + dt.timedelta(days=1)
    row = add(session, "report", IntervalSchedule(every=10, period="seconds"), args="[1, 2]",
              kwargs='{"x": "y"}', queue="q", priority=3, headers='{"h": 1}',
              expires=expires)  # fmt: skip
    theirs = ModelEntry(row, Session=sessionmaker(session.get_bind()), app=app)
    ours = SqlAlchemyCeleryBeatSource(app).entries()["report"]
    assert (ours["task"], ours["args"], ours["kwargs"]) == (theirs.task, theirs.args,
                                                            theirs.kwargs)  # fmt: skip
    assert ours["options"] == theirs.options


def test_a_one_off_row_fires_once_at_least_its_delay_after_it_was_saved(
    app: Celery, session: Session
) -> None:
    row = add(session, "once", IntervalSchedule(every=1, period="seconds"), one_off=True)
    slots = SqlAlchemyCeleryBeatSource(app).entries()["once"]["schedule"].slots
    session.refresh(row)  # as stored (MariaDB keeps whole seconds)
    saved = ms(row.date_changed.replace(tzinfo=row.date_changed.tzinfo or UTC))
    first = slots.next_after(0)
    assert first == (saved + ONE_OFF_DELAY + 999) // 1000 * 1000
    assert slots.next_after(first) is None


def test_the_version_is_the_change_tables_and_moves_with_every_edit(
    app: Celery, session: Session
) -> None:
    source = SqlAlchemyCeleryBeatSource(app)
    assert source.version() is None, "no change row before the first edit"
    row = add(session, "e", IntervalSchedule(every=1, period="seconds"))
    first = source.version()
    assert first is not None
    row.args = '["changed"]'
    session.commit()
    assert source.version() not in (None, first)
    assert source.entries()["e"]["args"] == ["changed"]


def test_each_slot_is_counted_once_and_a_one_off_row_is_disabled(
    app: Celery, session: Session
) -> None:
    add(session, "e", IntervalSchedule(every=1, period="seconds"))
    add(session, "once", IntervalSchedule(every=1, period="seconds"), one_off=True)
    source = SqlAlchemyCeleryBeatSource(app)
    source.entries()
    before = source.version()
    source.published_many([("e", 1_000), ("e", 2_000), ("once", 5_000)], 1_800_000_000.0)
    source.published_many([("e", 2_000)], 1_800_000_001.0)  # sent again: not counted again
    session.expire_all()
    rows = {r.name: r for r in session.scalars(sa.select(PeriodicTask))}
    assert (rows["e"].total_run_count, rows["e"].enabled) == (2, True)
    assert (rows["once"].total_run_count, rows["once"].enabled) == (1, False)
    stamp = rows["e"].last_run_at
    assert stamp.replace(tzinfo=stamp.tzinfo or UTC).timestamp() == 1_800_000_000.0
    assert source.version() != before, "disabling the one-off row is announced"
    assert session.get(PeriodicTaskChanged, 1) is not None


def test_a_row_edited_just_before_a_slot_and_read_just_after_it_still_sends_the_slot(
    app: Celery, session: Session, redis_cluster: Any, fired: list[events.SlotFired]
) -> None:
    """Saved at 00:00:15.8, read at 00:00:16.08 (the tick slot 16 falls due in): slot 16
    is the old schedule's, and sent; then every 4 s."""
    clock = FakeClock("2026-01-01T00:00:00.58")  # the version read at .08 of each second
    row = add(session, "e", IntervalSchedule(every=8, period="seconds"))
    app.conf.update(
        singleton_beat_redis_urls=[redis_cluster(1)[0].url],
        singleton_beat_schedule_source="sqlalchemy_celery_beat",
    )
    sched = Scheduler(app=on_clock(app, clock, monotonic=True))
    try:
        run(sched, clock, "2026-01-01T00:00:15.6", step=0.5)
        shorter = IntervalSchedule(every=4, period="seconds")
        session.add(shorter)
        session.flush()
        row.schedule_model = shorter
        session.commit()
        run(sched, clock, "2026-01-01T00:00:24.1", step=0.5)
    finally:
        sched.close()
    sent = [slot_label(round(e.slot.timestamp() * 1000)) for e in fired]
    assert sent == [f"2026-01-01T00:00:{s:02d}.000Z" for s in (8, 16, 20, 24)]


def test_a_row_s_header_policies_jitter_its_sends_give_the_slot_and_mark_its_failure_limit(
    app: Celery, session: Session, redis_cluster: Any
) -> None:
    headers = json.dumps({"trace": "abc", "singleton_beat": ROW_POLICIES})
    add(session, "herd", IntervalSchedule(every=10, period="seconds"), headers=headers)
    clock = FakeClock("2026-01-01T00:00:00")
    beat = replica_of("sqlalchemy_celery_beat", redis_cluster(1)[0], clock, app)
    with beat as replica, published(clock) as sent:
        run(replica, clock, "2026-01-01T00:00:45", step=0.25)

    check_row_policies_sent(sent, "herd", step=0.25)


def test_a_row_with_a_bad_header_policy_is_left_out_with_one_line_naming_it(
    app: Celery, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    add(session, "nightly", IntervalSchedule(every=10, period="seconds"),
        headers='{"singleton_beat": {"pause_on_failure": "3"}}')  # fmt: skip
    add(session, "hourly", IntervalSchedule(every=10, period="seconds"),
        headers='{"singleton_beat": {"pause_on_failure": 3}}')  # fmt: skip
    with caplog.at_level(logging.ERROR):
        entries = SqlAlchemyCeleryBeatSource(app).entries()

    assert sorted(entries) == ["hourly"]
    assert entries["hourly"]["options"]["singleton_beat"] == {"pause_on_failure": 3}
    assert [r.getMessage() for r in caplog.records] == [
        "singleton beat: PeriodicTask 'nightly' is left out: ConfigurationError: PeriodicTask "
        "'nightly' headers['singleton_beat']['pause_on_failure'] = '3' is not valid: a whole "
        "number of consecutive failed runs, 0 (default: never pause) or more."
    ]

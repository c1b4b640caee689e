"""What each django-celery-beat ``PeriodicTask`` field becomes in beat (a real database)."""

from __future__ import annotations

import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

import psycopg
import pytest
from celery import Celery
from django.db import DatabaseError, connections
from django.db.backends.signals import connection_created
from django.test import override_settings
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.core.slots import CronSlots, SlotSchedule, SolarSlots
from django_celery_singleton_beat.sources import DjangoCeleryBeatSource
from tests.support.databases import ToPostgres

pytestmark = pytest.mark.django_db(transaction=True)  # beat reads in autocommit, as here
UTC = dt.timezone.utc
APP = Celery("rows", broker="memory://", set_as_current=False)


def ms(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)


def plan(name: str, spec: dict[str, object]) -> Plan:
    return Plan.build(Entry(name=name, app=APP, **spec), UTC, 300.0)


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.create(every=seconds, period=IntervalSchedule.SECONDS)


def test_each_field_of_a_periodic_task_becomes_the_message_or_the_slots() -> None:
    start = dt.datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
    expires = dt.datetime(2030, 1, 1, 12, 1, 0, tzinfo=UTC)
    PeriodicTask.objects.create(
        name="full", task="reports.build", interval=every(10), args=json.dumps([1, "a"]),
        kwargs=json.dumps({"k": 2}), queue="reports", exchange="ex", routing_key="rk",
        priority=3, headers=json.dumps({"h": "v"}), start_time=start, expires=expires,
    )  # fmt: skip
    PeriodicTask.objects.create(name="short", task="t", interval=every(5), expire_seconds=30)
    PeriodicTask.objects.create(name="off", task="t", interval=every(5), enabled=False)
    specs = DjangoCeleryBeatSource(APP).entries()
    assert sorted(specs) == ["full", "short"]
    full = specs["full"]
    assert (full["task"], full["args"], full["kwargs"]) == ("reports.build", [1, "a"], {"k": 2})
    assert full["options"] == {
        "queue": "reports", "exchange": "ex", "routing_key": "rk", "priority": 3,
        "expires": expires, "headers": {"h": "v", "periodic_task_name": "full"},
    }  # fmt: skip
    slots = plan("full", dict(full)).slots
    assert isinstance(full["schedule"], SlotSchedule)
    assert slots.next_after(0) == ms(start) + 5000  # the first 10 s slot at or after start
    assert slots.next_after(ms(expires) - 10_000) is None  # none from expires on
    assert specs["short"]["options"]["expires"] == 30


def test_crontab_solar_and_clocked_rows_keep_their_zone_place_and_time() -> None:
    new_york = CrontabSchedule.objects.create(
        minute="0", hour="9", timezone=ZoneInfo("America/New_York")
    )
    PeriodicTask.objects.create(name="cron", task="t", crontab=new_york)
    sun = SolarSchedule.objects.create(event="sunrise", latitude=52.52, longitude=13.4)
    PeriodicTask.objects.create(name="sun", task="t", solar=sun)
    at = dt.datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    clock = ClockedSchedule.objects.create(clocked_time=at)
    PeriodicTask.objects.create(name="clock", task="t", clocked=clock, one_off=True)
    specs = DjangoCeleryBeatSource(APP).entries()
    cron = plan("cron", dict(specs["cron"])).slots
    assert isinstance(cron, CronSlots)
    assert cron.next_after(ms(dt.datetime(2026, 11, 24, tzinfo=UTC))) == ms(
        dt.datetime(2026, 11, 24, 14, tzinfo=UTC)
    )
    assert isinstance(plan("sun", dict(specs["sun"])).slots, SolarSlots)
    clocked = plan("clock", dict(specs["clock"])).slots
    assert (clocked.next_after(0), clocked.next_after(ms(at))) == (ms(at), None)


def test_a_run_writes_the_run_count_once_and_disables_a_one_off_row() -> None:
    PeriodicTask.objects.create(name="tick", task="t", interval=every(5))
    PeriodicTask.objects.create(name="once", task="t", interval=every(5), one_off=True)
    source = DjangoCeleryBeatSource(APP)
    source.entries()
    version = source.version()
    sent = time.time()
    source.published("tick", 1000, sent)
    assert source.version() == version, "a run count does not make the replicas re-read"
    source.published("once", 2000, sent)
    tick, once = PeriodicTask.objects.get(name="tick"), PeriodicTask.objects.get(name="once")
    assert (tick.total_run_count, tick.enabled) == (1, True)
    assert tick.last_run_at is not None and abs(tick.last_run_at.timestamp() - sent) < 0.001
    assert (once.total_run_count, once.enabled) == (1, False)
    assert source.version() != version, "a disabled row makes the replicas re-read"
    assert "once" not in source.entries()


def test_a_slot_told_again_by_any_replica_counts_once_and_slots_in_any_order_each_once() -> None:
    """A slot is told before it is marked done, so a replica taking over from one that
    died in between tells it again: the count stays exact, whichever replica tells it."""
    PeriodicTask.objects.create(name="tick", task="t", interval=every(1))
    PeriodicTask.objects.create(name="other", task="t", interval=every(1))
    first, second = DjangoCeleryBeatSource(APP), DjangoCeleryBeatSource(APP)
    first.entries()
    second.entries()
    now = round(time.time()) * 1000
    first.published_many([("tick", now), ("other", now)], time.time())
    second.published_many([("tick", now)], time.time())  # sent again after a death
    first.published_many([("tick", now), ("tick", now - 2000), ("tick", now - 1000)], time.time())
    counts = dict(PeriodicTask.objects.values_list("name", "total_run_count"))
    assert counts == {"tick": 3, "other": 1}


def test_the_change_poll_keeps_its_connection_open_and_still_sees_each_save() -> None:
    """With Django's default ``CONN_MAX_AGE = 0``, polling once a second does not open a
    connection per poll (about 10 ms each on PostgreSQL), and a save still changes the version."""
    task = PeriodicTask.objects.create(name="tick", task="t", interval=every(5))
    source = DjangoCeleryBeatSource(APP)
    opened: list[object] = []

    def count(connection: object, **_: object) -> None:
        opened.append(connection)

    version = source.version()
    connection_created.connect(count, weak=False)
    try:
        versions = [source.version() for _ in range(3)]
        task.interval = every(7)
        task.save()
        changed = source.version()
    finally:
        connection_created.disconnect(count)
    assert connections["default"].settings_dict["CONN_MAX_AGE"] == 0
    assert (versions, opened) == ([version] * 3, [])
    assert changed != version


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_a_poll_after_the_server_closed_the_kept_connection_reads_on_a_new_one() -> None:
    """The connection kept between polls is dropped by the server (a restart, an idle
    timeout, ``pg_terminate_backend``): the next poll still answers, with the same value."""
    with override_settings(DATABASE_ROUTERS=[ToPostgres()]):
        PeriodicTask.objects.create(name="tick", task="t", interval=every(5))
        source = DjangoCeleryBeatSource(APP)
        version = source.version()
        kept = connections["postgres"]
        pid = kept.connection.info.backend_pid
        with psycopg.connect(
            host=kept.settings_dict["HOST"], port=kept.settings_dict["PORT"],
            user=kept.settings_dict["USER"], dbname="postgres", autocommit=True,
        ) as admin:  # fmt: skip
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert source.version() == version
        assert kept.connection.info.backend_pid != pid


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_the_poll_on_postgresql_sees_each_save_on_its_kept_connection_and_fails_clearly() -> None:
    """On PostgreSQL (psycopg 3) the poll goes straight through libpq: it keeps its value
    until a save, changes with each save, opens no connection, and a statement that
    fails there raises Django's error (as the cursor would) rather than a value."""
    with override_settings(DATABASE_ROUTERS=[ToPostgres()]):
        task = PeriodicTask.objects.create(name="tick", task="t", interval=every(5))
        source = DjangoCeleryBeatSource(APP)
        first = source.version()
        pid = connections["postgres"].connection.info.backend_pid
        assert [source.version() for _ in range(3)] == [first] * 3
        task.interval = every(7)
        task.save()
        second = source.version()
        task.interval = every(9)
        task.save()
        third = source.version()
        assert len({first, second, third}) == 3
        assert connections["postgres"].connection.info.backend_pid == pid
        source._poll_bytes = b"SELECT 1 / 0"
        with pytest.raises(DatabaseError, match="division by zero"):
            source.version()


def test_counted_slots_older_than_a_day_are_dropped_as_runs_are_counted() -> None:
    from django_celery_singleton_beat.models import CountedSlot

    PeriodicTask.objects.create(name="tick", task="t", interval=every(1))
    now = round(time.time()) * 1000
    CountedSlot.objects.create(entry="tick", slot=now - 25 * 3600 * 1000)
    CountedSlot.objects.create(entry="tick", slot=now - 23 * 3600 * 1000)
    DjangoCeleryBeatSource(APP).published_many([("tick", now)], time.time())
    kept = sorted(CountedSlot.objects.values_list("slot", flat=True))
    assert kept == [now - 23 * 3600 * 1000, now]


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_a_save_through_django_on_postgresql_hints_the_replicas_without_a_query() -> None:
    """The poll's connection listens for the app's change notices: a row saved through
    Django (in this process or another) is hinted at, once; nothing else is."""
    with override_settings(DATABASE_ROUTERS=[ToPostgres()]):
        task = PeriodicTask.objects.create(name="tick", task="t", interval=every(5))
        source = DjangoCeleryBeatSource(APP)
        source.version()
        assert source.hinted() is False
        task.interval = every(7)
        task.save()
        assert (source.hinted(), source.hinted()) == (True, False)
        settings = connections["postgres"].settings_dict
        with psycopg.connect(
            host=settings["HOST"], port=settings["PORT"], user=settings["USER"],
            dbname=settings["NAME"], autocommit=True,
        ) as other:  # fmt: skip
            other.execute("SELECT pg_notify('celery_singleton_beat_schedule', '')")
        deadline = time.monotonic() + 2
        while not source.hinted():
            assert time.monotonic() < deadline, "another connection's notice never arrived"
            time.sleep(0.01)
        PeriodicTask.objects.filter(name="tick").update(description="bulk")
        assert source.hinted() is False, "an update without signals is left to the poll"


def test_the_source_without_the_app_installed_is_refused_at_start_naming_what_to_add() -> None:
    from celery_singleton_beat.errors import ConfigurationError

    installed = ["django.contrib.contenttypes", "django.contrib.auth", "django_celery_beat"]
    with (
        override_settings(INSTALLED_APPS=installed),
        pytest.raises(
            ConfigurationError,
            match=r"singleton_beat_schedule_source.*'django_celery_singleton_beat'",
        ),
    ):
        DjangoCeleryBeatSource(APP)

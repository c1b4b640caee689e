"""A database that does not answer: a lock error for DatabaseLock, a pause for the recorder."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from celery_singleton_beat.core.slots import IntervalSlots
from celery_singleton_beat.errors import LockError
from celery_singleton_beat.observe import events
from django_celery_singleton_beat.conf import AppSettings
from django_celery_singleton_beat.locks import DatabaseLock
from django_celery_singleton_beat.recorder import Recorder


@pytest.fixture
def unreachable(django_db_blocker: Any) -> Iterator[str]:
    """A PostgreSQL alias pointing at a port where nothing listens."""
    connections.settings["unreachable"] = {
        **connections.settings["postgres"], "NAME": "nothing", "PORT": "1", "TEST": {},
    }  # fmt: skip
    with django_db_blocker.unblock():
        yield "unreachable"
        connections["unreachable"].close()
    del connections.settings["unreachable"]


def test_an_unreachable_database_is_a_lock_error_not_held(unreachable: str) -> None:
    with pytest.raises(LockError, match="database 'unreachable'"):
        DatabaseLock(using=unreachable).acquire("k", ttl=5)


def fired(entry: str, slot: int) -> events.SlotFired:
    return events.SlotFired(
        entry=entry,
        slot=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=slot),
        task_id=f"id-{slot}", task="t", replica="host:1", late=0.0,
    )  # fmt: skip


def test_records_wait_in_a_bounded_buffer_and_drops_are_counted_and_logged(
    unreachable: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(AppSettings(database=unreachable, recorder_buffer=100))
    try:
        with caplog.at_level(logging.WARNING, logger="django_celery_singleton_beat.recorder"):
            for slot in range(250):
                recorder.on_event(fired("e", slot))
            assert not recorder.flush(timeout=1.0), "nothing can be written"
            assert len(recorder._pending) <= 100
            assert recorder._dropped >= 150
    finally:
        recorder.stop()
    assert recorder._thread is not None and not recorder._thread.is_alive()
    paused = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(paused) == 1, "the outage is logged once, however often the writer retries"
    assert "wait in memory (at most 100)" in paused[0].getMessage()
    dropping = [r for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(dropping) == 1


def test_each_entry_s_newest_version_waits_whatever_the_bound_and_older_ones_are_dropped(
    unreachable: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 entries each edited once while the database is down, beside a buffer of 100:
    every entry's newest version waits, and of the 300 older ones 200 are dropped, counted
    and logged."""
    recorder = Recorder(AppSettings(database=unreachable, recorder_buffer=100))
    since = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    try:
        with caplog.at_level(logging.WARNING, logger="django_celery_singleton_beat.recorder"):
            for every_ms, at in ((60_000, since), (120_000, since + dt.timedelta(minutes=5))):
                for entry in range(300):
                    recorder.on_event(events.EntryScheduled(
                        entry=f"e{entry}", since=at, slots=IntervalSlots(every_ms), replica="h:1"
                    ))  # fmt: skip
            assert not recorder.flush(timeout=1.0), "nothing can be written"
            waiting = dict(recorder._versions)
    finally:
        recorder.stop()
    newest = {(f"e{entry}", since + dt.timedelta(minutes=5)) for entry in range(300)}
    assert newest <= set(waiting) and len(waiting) == 400
    assert recorder._dropped == 200
    assert len([r for r in caplog.records if "dropping the oldest" in r.getMessage()]) == 1

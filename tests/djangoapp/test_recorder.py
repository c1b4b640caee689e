"""The recorder's writer in this process: slot decisions merge, bad records do not stop it."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celery_singleton_beat.observe import events
from django_celery_singleton_beat.conf import AppSettings
from django_celery_singleton_beat.models import SlotDispatch, TaskRun
from django_celery_singleton_beat.recorder import Recorder

pytestmark = pytest.mark.django_db(transaction=True)
SLOT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    made = Recorder(AppSettings())
    yield made
    made.stop()


def test_a_slot_published_twice_is_one_row_counting_both(recorder: Recorder) -> None:
    fired = events.SlotFired(
        entry="e", slot=SLOT, task_id="id", task="t", replica="a:1", late=0.01, coalesced=2
    )
    recorder.on_event(fired)
    assert recorder.flush(5)
    recorder.on_event(events.SlotFired(**{**fired.__dict__, "replica": "b:2", "late": 4.0}))
    assert recorder.flush(5)
    (row,) = SlotDispatch.objects.all()
    assert (row.outcome, row.publishes, row.replica, row.slots) == ("dispatched", 2, "b:2", 3)


def test_a_failed_publish_and_a_misfire_are_recorded_with_their_outcome(recorder: Recorder) -> None:
    recorder.on_event(
        events.SlotSkipped(entry="e", slot=SLOT, count=1, reason="publish_failed", replica="a:1")
    )
    recorder.on_event(
        events.SlotSkipped(entry="m", slot=SLOT, count=4, reason="misfire", replica="a:1")
    )
    assert recorder.flush(5)
    rows = {r.entry: r for r in SlotDispatch.objects.all()}
    assert (rows["e"].outcome, rows["e"].publishes) == ("publish_failed", 0)
    assert (rows["m"].outcome, rows["m"].slots) == ("skipped_misfire", 4)


def test_a_record_that_cannot_be_written_is_logged_and_the_writer_goes_on(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {"ref": 1, "task_id": "x", "task_name": "t", "status": "started", "no_such_field": 1}
    with caplog.at_level(logging.ERROR, logger="django_celery_singleton_beat.recorder"):
        recorder._submit(("run", 1), ("run", bad))
        assert recorder.flush(5)
    assert "1 records could not be written and are dropped" in caplog.text
    good = {"ref": 2, "task_id": "y", "task_name": "t", "status": "success",
            "started_at": SLOT}  # fmt: skip
    recorder._submit(("run", 2), ("run", good))
    assert recorder.flush(5)
    assert list(TaskRun.objects.values_list("task_id", flat=True)) == ["y"]


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
@pytest.mark.parametrize("database", ["default", "postgres"])
def test_a_forgotten_migrate_is_named_in_the_paused_line(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    from django.db import connections

    table = TaskRun._meta.db_table
    recorder = Recorder(AppSettings(database=database))
    with connections[database].cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        with caplog.at_level(logging.ERROR, logger="django_celery_singleton_beat.recorder"):
            run = {"ref": 1, "task_id": "x", "task_name": "t", "status": "started",
                   "started_at": SLOT}  # fmt: skip
            recorder._submit(("run", 1), ("run", run))
            recorder.flush(2)
    finally:
        recorder.stop()
        with connections[database].cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
    (line,) = [r.getMessage() for r in caplog.records if "recording paused" in r.getMessage()]
    command = "manage.py migrate" + ("" if database == "default" else " --database postgres")
    assert f": the app's tables are missing ({table}); run `{command}`; tasks and beat" in line


def test_a_slot_copy_dropped_while_its_run_executes_in_another_thread_is_its_own_row(
    redis_cluster: Any,
) -> None:
    """A thread-pool worker runs a slot's message and, meanwhile, its re-published copy
    (same task id, same attempt): two rows, the run's own success and the dropped copy."""
    import threading

    from celery import Celery

    from celery_singleton_beat import SingletonTask

    master = redis_cluster(1)[0]
    app = Celery("recorder-threads", broker="memory://", set_as_current=False)
    app.conf.update(singleton_beat_redis_urls=[master.url])
    started = threading.Event()

    @app.task(base=SingletonTask, bind=True, name="reports.nightly")
    def nightly(self: Any) -> dict[str, int]:
        started.set()
        time.sleep(1.0)
        return {"rows": 42}

    headers = {"singleton_beat_entry": "nightly", "singleton_beat_slot": "2026-03-01T12:00:00.000Z"}
    recorder = Recorder(AppSettings())
    recorder.connect()
    try:
        real = threading.Thread(target=lambda: nightly.apply(task_id="slot-id", headers=headers))
        real.start()
        assert started.wait(10)
        copy = nightly.apply(task_id="slot-id", headers=headers)
        real.join(10)
        assert recorder.flush(5)
    finally:
        recorder.disconnect()
        recorder.stop()
    assert copy.state == "IGNORED"
    runs = TaskRun.objects.filter(task_id="slot-id").order_by("status")
    assert [(r.status, r.result, r.entry) for r in runs] == [
        ("skipped_duplicate", "", "nightly"),
        ("success", "{'rows': 42}", "nightly"),
    ]


@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_one_change_reported_by_two_replicas_at_the_same_moment_is_one_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both replicas read the entry's newest version before either writes the new one."""
    import threading

    from django.db import connections
    from django.db.models.query import QuerySet

    from django_celery_singleton_beat.models import ScheduleVersion

    recorder = Recorder(AppSettings(database="postgres"))
    first = {"entry": "e", "since": SLOT, "replica": "a:1",
             "slots": '{"anchor_ms": 0, "every_ms": 4000}'}  # fmt: skip
    recorder._write_version("postgres", first)
    both_read = threading.Barrier(2, timeout=10)
    read = threading.local()
    original = QuerySet.first

    def first_row(self: QuerySet[Any]) -> Any:
        row = original(self)
        if self.model is ScheduleVersion and not getattr(read, "once", False):
            read.once = True
            both_read.wait()
        return row

    monkeypatch.setattr(QuerySet, "first", first_row)
    new = '{"anchor_ms": 0, "every_ms": 8000}'

    def report(replica: str, after: float) -> None:
        since = SLOT + dt.timedelta(seconds=after)
        try:
            recorder._write_version("postgres", {**first, "since": since, "replica": replica,
                                                 "slots": new})  # fmt: skip
        finally:
            connections["postgres"].close()

    reports = [("a:1", 8.03), ("b:2", 8.02)]
    threads = [threading.Thread(target=report, args=reported) for reported in reports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    recorder.stop()
    kept = ScheduleVersion.objects.using("postgres").order_by("since", "id")
    assert [row.slots for row in kept] == [first["slots"], new]

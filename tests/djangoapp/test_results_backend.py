"""django-celery-results' database backend keeps the real result when a copy is dropped,
and the name of the django-celery-beat row that sent a run.

The demo project's worker stores results with ``CELERY_RESULT_BACKEND = "django-db"`` in
this test's PostgreSQL database; the test reads the rows it writes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django_celery_results.models import TaskResult

from celery_singleton_beat.testing import CeleryCluster, RedisServer, wait_for
from django_celery_singleton_beat.models import TaskRun
from tests.djangoapp.project import project_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]

SLOT = {"singleton_beat_entry": "charge-cards", "singleton_beat_slot": "2026-11-24T02:30:00.000Z"}


@pytest.fixture
def cluster(tmp_path: Path, redis_cluster: Any) -> Iterator[tuple[CeleryCluster, Celery]]:
    redis: RedisServer = redis_cluster(1)[0]
    env = project_env(redis, DEMO_RESULT_BACKEND="django-db")
    running = CeleryCluster(tmp_path, "demo_site", env)
    running.start_worker(pool="threads", concurrency=4)
    sender = Celery("sender", broker=f"redis://127.0.0.1:{redis.port}/1", set_as_current=False)
    yield running, sender
    running.stop()


def stored(task_id: str) -> list[tuple[str, Any]]:
    return list(
        TaskResult.objects.using("postgres").filter(task_id=task_id).values_list("status", "result")
    )


def recorded(task_id: str, status: str) -> bool:
    return TaskRun.objects.using("postgres").filter(task_id=task_id, status=status).exists()


def test_copies_of_a_slot_dropped_during_and_after_its_run_leave_the_real_result(
    cluster: tuple[CeleryCluster, Celery],
) -> None:
    _worker, sender = cluster
    send = {"task_id": "slot-copy", "headers": SLOT}
    sender.send_task("billing.reconcile_account", args=[5, 2.0], **send)
    wait_for(lambda: recorded("slot-copy", "started"), 30, "the real run to start")
    sender.send_task("billing.reconcile_account", args=[5, 2.0], **send)  # during the run
    wait_for(lambda: stored("slot-copy"), 30, "the real result")
    sender.send_task("billing.reconcile_account", args=[5, 2.0], **send)  # after it
    wait_for(
        lambda: (
            TaskRun.objects.using("postgres")
            .filter(task_id="slot-copy", status="skipped_duplicate")
            .count()
            >= 2
        ),
        30,
        "both copies dropped",
    )
    time.sleep(1)  # anything a dropped copy would store has been stored by now
    assert stored("slot-copy") == [("SUCCESS", "5")]


def test_a_skipped_singleton_run_stores_no_result(
    cluster: tuple[CeleryCluster, Celery],
) -> None:
    _worker, sender = cluster
    sender.send_task("billing.reconcile_account", args=[6, 2.0], task_id="first")
    wait_for(lambda: recorded("first", "started"), 30, "the first run to start")
    sender.send_task("billing.reconcile_account", args=[6, 2.0], task_id="second")
    wait_for(lambda: recorded("second", "skipped_duplicate"), 30, "the second skipped")
    wait_for(lambda: stored("first"), 30, "the first result")
    time.sleep(1)
    assert stored("first") == [("SUCCESS", "6")]
    assert stored("second") == [], "a skipped run stores nothing: its state stays PENDING"


def test_a_run_sent_for_a_django_celery_beat_row_stores_the_row_name_with_its_result(
    cluster: tuple[CeleryCluster, Celery],
) -> None:
    running, _sender = cluster
    models = pytest.importorskip("django_celery_beat.models")
    every = models.IntervalSchedule.objects.using("postgres").create(
        every=1, period=models.IntervalSchedule.SECONDS
    )
    models.PeriodicTask.objects.using("postgres").create(
        name="remind-weekly",
        task="billing.send_reminders",
        interval=every,
        kwargs='{"days_overdue": 3}',
    )
    running.start_replica("beat")
    results = TaskResult.objects.using("postgres").filter(task_name="billing.send_reminders")
    wait_for(results.exists, 30, "a result of the row's task")
    assert list(results.values_list("periodic_task_name", "status", "result"))[:1] == [
        ("remind-weekly", "SUCCESS", '"reminded accounts 3 days overdue"')
    ]

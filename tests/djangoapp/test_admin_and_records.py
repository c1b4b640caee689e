"""Records, the admin pages, the dashboard, pruning and settings (SQLite and PostgreSQL).

``make test`` runs this module twice: on SQLite (tests.djangoapp.settings) and with
PostgreSQL as the default database (tests.djangoapp.settings_postgres).
"""

from __future__ import annotations

import datetime as dt
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.urls import reverse

from django_celery_singleton_beat import conf
from django_celery_singleton_beat.dashboard import percentile, timeline_svg
from django_celery_singleton_beat.models import SlotDispatch, TaskRun

pytestmark = pytest.mark.django_db
NOW = dt.datetime.now(dt.timezone.utc)


def run(**fields: Any) -> TaskRun:
    values: dict[str, Any] = {
        "task_id": "t1", "task_name": "billing.charge", "status": "success", "node": "w1@host",
        "pid": 10, "started_at": NOW - dt.timedelta(minutes=5), "runtime": 1.5,
    }  # fmt: skip
    values.update(fields)
    return TaskRun.objects.create(**values)


def slot(**fields: Any) -> SlotDispatch:
    values: dict[str, Any] = {
        "entry": "charge", "slot": NOW.replace(microsecond=0), "outcome": "dispatched",
        "replica": "host:1", "decided_at": NOW, "publishes": 1,
    }  # fmt: skip
    values.update(fields)
    return SlotDispatch.objects.create(**values)


def test_the_database_under_test_is_the_one_named(settings: Any) -> None:
    assert connection.vendor == settings.EXPECTED_VENDOR


def test_migrations_match_the_models() -> None:
    call_command("makemigrations", "singleton_beat", "--check", "--dry-run", verbosity=0)


def test_one_slot_decision_per_entry_and_slot() -> None:
    slot()
    with pytest.raises(IntegrityError), transaction.atomic():
        slot(replica="host:2")


@pytest.fixture
def records() -> dict[str, Any]:
    return {
        "run": run(),
        "retry": run(task_id="t2", status="retry", exception="RuntimeError('x')"),
        "skipped": run(task_id="t3", status="skipped_duplicate", holder="abc@host/1"),
        "slot": slot(),
    }


@pytest.fixture
def staff(client: Client) -> Client:
    user = User.objects.create_user("ops", password="pw", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


PAGES = [
    ("admin:singleton_beat_taskrun_changelist", None),
    ("admin:singleton_beat_slotdispatch_changelist", None),
    ("admin:singleton_beat_lock_changelist", None),
    ("admin:singleton_beat_taskrun_change", "run"),
    ("admin:singleton_beat_slotdispatch_change", "slot"),
    ("admin:singleton_beat_dashboard", None),
]


def url(name: str, obj: str | None, records: dict[str, Any]) -> str:
    return reverse(name, args=[records[obj].pk]) if obj else reverse(name)


@pytest.mark.parametrize(("name", "obj"), PAGES)
def test_staff_see_every_page(staff: Client, records: dict[str, Any], name: str, obj: str) -> None:
    response = staff.get(url(name, obj, records))
    assert response.status_code == 200


@pytest.mark.parametrize(("name", "obj"), PAGES)
def test_anonymous_users_are_sent_to_the_login_page(
    client: Client, records: dict[str, Any], name: str, obj: str
) -> None:
    response = client.get(url(name, obj, records))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize(("name", "obj"), PAGES)
def test_logged_in_users_who_are_not_staff_cannot_see_them(
    client: Client, records: dict[str, Any], name: str, obj: str
) -> None:
    client.force_login(User.objects.create_user("someone", password="pw"))
    response = client.get(url(name, obj, records))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_the_admin_is_read_only(staff: Client, records: dict[str, Any]) -> None:
    assert staff.get(reverse("admin:singleton_beat_taskrun_add")).status_code == 403
    page = staff.get(reverse("admin:singleton_beat_taskrun_change", args=[records["run"].pk]))
    assert b'name="_save"' not in page.content


def test_the_run_list_filters_by_status_and_searches_task_ids(
    staff: Client, records: dict[str, Any]
) -> None:
    page = staff.get(reverse("admin:singleton_beat_taskrun_changelist"), {"status": "retry"})
    assert page.context["cl"].result_count == 1
    page = staff.get(reverse("admin:singleton_beat_taskrun_changelist"), {"q": "t3"})
    assert [r.task_id for r in page.context["cl"].result_list] == ["t3"]


def test_the_dashboard_counts_runs_and_warns_near_the_ttl(staff: Client, settings: Any) -> None:
    for i in range(10):
        run(task_id=f"r{i}", runtime=1.0 + i, lock_wait=0.01 * i, entry="charge")
    run(task_id="dup", status="skipped_duplicate", entry="charge", runtime=None)
    for minute in range(3):
        slot(slot=NOW.replace(second=0, microsecond=0) - dt.timedelta(minutes=minute))
    page = staff.get(reverse("admin:singleton_beat_dashboard"), {"window": "1h"})
    tasks = {t["name"]: t for t in page.context["tasks"]}
    charge = tasks["billing.charge"]
    assert charge["total"] == 11 and charge["skipped_duplicate"] == 1
    assert charge["runtime_p50"] == pytest.approx(5.5)
    assert charge["wait_p95"] == pytest.approx(0.0855)
    entries = {e["name"]: e for e in page.context["entries"]}
    assert entries["charge"]["dispatched"] == 3
    assert entries["charge"]["executed"] == 10
    assert entries["charge"]["duplicates"] == 1
    svg = page.context["timeline"]
    assert svg.count('class="run"') == 10 and svg.count('class="skipped"') == 1


def test_percentiles_interpolate() -> None:
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5


def test_the_timeline_escapes_names_and_marks_skipped_runs() -> None:
    runs = [
        TaskRun(task_id="a", task_name="<script>", status="success", node="n1",
                started_at=NOW - dt.timedelta(seconds=50),
                finished_at=NOW - dt.timedelta(seconds=40)),
        TaskRun(task_id="b", task_name="<script>", status="skipped_duplicate", node="n2",
                started_at=NOW - dt.timedelta(seconds=30)),
    ]  # fmt: skip
    svg, legend = timeline_svg(runs, NOW - dt.timedelta(minutes=1), NOW)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert legend == {"n1": legend["n1"]}, "skipped runs are marks, not node bars"


def test_pruning_removes_only_rows_older_than_the_cutoff() -> None:
    old_run = run(task_id="old", started_at=NOW - dt.timedelta(days=31))
    new_run = run(task_id="new", started_at=NOW - dt.timedelta(days=29))
    old_slot = slot(entry="a", decided_at=NOW - dt.timedelta(days=31))
    new_slot = slot(entry="b", decided_at=NOW - dt.timedelta(days=29))
    out = StringIO()
    call_command("singleton_beat_prune", "--older-than", "30d", stdout=out)
    assert "1 task runs, 1 slot dispatches deleted" in out.getvalue()
    assert list(TaskRun.objects.values_list("pk", flat=True)) == [new_run.pk]
    assert list(SlotDispatch.objects.values_list("pk", flat=True)) == [new_slot.pk]
    assert not TaskRun.objects.filter(pk=old_run.pk).exists()
    assert not SlotDispatch.objects.filter(pk=old_slot.pk).exists()


def test_the_prune_command_needs_an_age_and_names_a_bad_one(settings: Any) -> None:
    with pytest.raises(CommandError, match="give --older-than"):
        call_command("singleton_beat_prune")
    with pytest.raises(CommandError, match=r"--older-than = '30 days' is not valid; expected"):
        call_command("singleton_beat_prune", "--older-than", "30 days")


def test_the_retention_setting_prunes_from_the_periodic_task(settings: Any) -> None:
    from django_celery_singleton_beat.tasks import prune_records

    settings.SINGLETON_BEAT_RETENTION = "7d"
    run(task_id="old", started_at=NOW - dt.timedelta(days=8))
    run(task_id="new", started_at=NOW - dt.timedelta(days=6))
    assert prune_records() == {"task runs": 1, "slot dispatches": 0}
    assert list(TaskRun.objects.values_list("task_id", flat=True)) == ["new"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SINGLETON_BEAT_RETENTION",
            "forever",
            "SINGLETON_BEAT_RETENTION = 'forever' is not valid",
        ),
        ("SINGLETON_BEAT_RETENTION", "0d", "must be longer than zero"),
        (
            "SINGLETON_BEAT_DATABASE",
            "nope",
            "SINGLETON_BEAT_DATABASE = 'nope' is not valid; expected one of",
        ),
        ("SINGLETON_BEAT_RECORDER_BUFFER", 5, "at least 100"),
        ("SINGLETON_BEAT_TTL_WARNING", 2, "between 0 and 1"),
        ("SINGLETON_BEAT_ARGS_PREVIEW", "no.such.func", "a dotted path to a function"),
        ("SINGLETON_BEAT_RECORD", "yes", "True or False"),
    ],
)
def test_bad_settings_fail_at_start_up_naming_the_setting(
    settings: Any, name: str, value: Any, message: str
) -> None:
    setattr(settings, name, value)
    with pytest.raises(ImproperlyConfigured, match=message):
        conf.load()


def test_durations_read_in_every_accepted_form() -> None:
    assert conf.parse_duration("x", "30d") == dt.timedelta(days=30)
    assert conf.parse_duration("x", "12h") == dt.timedelta(hours=12)
    assert conf.parse_duration("x", 90) == dt.timedelta(seconds=90)
    assert conf.parse_duration("x", dt.timedelta(weeks=2)) == dt.timedelta(days=14)


def test_each_node_gets_its_own_colour() -> None:
    runs = [
        TaskRun(task_id=str(i), task_name="t", status="success", node=f"worker{i}@host",
                started_at=NOW - dt.timedelta(seconds=30 - i), finished_at=NOW)
        for i in range(5)
    ]  # fmt: skip
    _svg, legend = timeline_svg(runs, NOW - dt.timedelta(minutes=1), NOW)
    assert len(legend) == 5 and len(set(legend.values())) == 5

"""``celery -A proj singleton-beat …`` in a Django project on the database slot store.

The demo project (examples/django_project) runs with ``CELERY_SINGLETON_BEAT_STORE =
"database"`` and its task locks in the database, no Redis master anywhere, its schedule
from ``CELERY_BEAT_SCHEDULE``, django-celery-beat's rows and runtime entries, on this
test's own PostgreSQL database; a Redis server of the test is its broker, nothing more.
Every command runs as a user runs it, in a subprocess.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connections

from celery_singleton_beat.core import process
from celery_singleton_beat.testing import CeleryCluster, RedisServer, free_port, wait_for
from django_celery_singleton_beat.locks import DatabaseLock
from django_celery_singleton_beat.stores import DatabaseSlotStore
from tests.djangoapp.project import PROJECT, project_env, with_settings

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, databases=["postgres"])]

DATABASE_STORE = {
    "CELERY_SINGLETON_BEAT_STORE": "database",
    "CELERY_SINGLETON_BEAT_REDIS_URLS": None,
    "CELERY_SINGLETON_BEAT_TASK_BACKEND": "django_celery_singleton_beat.locks.DatabaseLock",
    "CELERY_SINGLETON_BEAT_SCHEDULE_SOURCE": ["beat_schedule", "django_celery_beat", "runtime"],
}


@pytest.fixture
def project(tmp_path: Path, redis_cluster: Any) -> Iterator[CeleryCluster]:
    """The demo project on the database store, with django-celery-beat's demo rows
    (``send-reminders`` every 3 s, ``nightly-report`` at 02:30 in Berlin)."""
    broker: RedisServer = redis_cluster(1)[0]
    running = CeleryCluster(
        tmp_path, "demo_site", with_settings(project_env(broker), **DATABASE_STORE)
    )
    rows = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), "demo_schedule"],
        env=running.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert rows.returncode == 0, rows.stderr
    yield running
    running.stop()


def cli(project: CeleryCluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "demo_site", "singleton-beat", *args],
        cwd=project.workdir, env=project.env(**env), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_schedule_commands_change_the_runtime_schedule_in_the_database(
    project: CeleryCluster,
) -> None:
    added = ok(cli(project, "schedule", "add", "rt-every3", "billing.charge_cards", "--every", "3"))
    assert added.stdout == "added 'rt-every3'\n"
    assert ok(cli(project, "schedule", "pause", "send-reminders")).stdout == (
        "paused 'send-reminders'\n"
    )
    asked = ok(cli(project, "schedule", "run-now", "charge-cards")).stdout
    assert asked.startswith("run now of 'charge-cards': ")
    run_id = asked.rpartition(": ")[2].strip()

    listed = json.loads(ok(cli(project, "schedule", "list", "--json")).stdout)
    assert listed["entries"] == {
        "rt-every3": {"task": "billing.charge_cards", "every": 3, "args": [], "kwargs": {},
                      "options": {}},
    }  # fmt: skip
    assert list(listed["paused"]) == ["send-reminders"]
    assert listed["paused"]["send-reminders"]["by"] == f"cli:{getpass.getuser()}"
    _revision, stored = DatabaseSlotStore("postgres").read_schedule()
    assert (sorted(stored["entries"]), sorted(stored["paused"])) == (
        ["rt-every3"],
        ["send-reminders"],
    )
    assert (stored["runs"][run_id]["entry"], stored["runs"][run_id]["task"]) == (
        "charge-cards",
        "billing.charge_cards",
    )

    assert ok(cli(project, "schedule", "resume", "send-reminders")).stdout == (
        "resumed 'send-reminders'\n"
    )
    assert ok(cli(project, "schedule", "remove", "rt-every3")).stdout == "removed 'rt-every3'\n"
    listed = json.loads(ok(cli(project, "schedule", "list", "--json")).stdout)
    assert (listed["entries"], listed["paused"]) == ({}, {})


def dispatched(entry: str) -> int:
    return DatabaseSlotStore("postgres").entry_counts(entry).get("dispatched", 0)


def test_status_and_describe_read_every_source_through_the_database_store(
    project: CeleryCluster,
) -> None:
    ok(cli(project, "schedule", "add", "rt-every3", "billing.charge_cards", "--every", "3"))
    ok(cli(project, "schedule", "pause", "nightly-report"))
    replica = project.start_replica("beat-1")
    wait_for(lambda: dispatched("send-reminders") >= 1 and dispatched("rt-every3") >= 1, 40,
             f"slots of the row and of the runtime entry\n{replica.text()}")  # fmt: skip

    status = ok(cli(project, "status", "--json"))
    data = json.loads(status.stdout)
    assert data["health"] == "healthy"
    assert data["store"].startswith("slot store -> postgresql database 'default'")
    assert [r["pid"] for r in data["replicas"]] == [replica.popen.pid]
    entries = {e["name"]: e for e in data["entries"]}
    assert {name: e["source"] for name, e in entries.items()} == {
        "charge-cards": "beat_schedule",
        "sync-ledger": "beat_schedule",
        "send-reminders": "django_celery_beat",
        "nightly-report": "django_celery_beat",
        "rt-every3": "runtime",
    }
    for name in ("send-reminders", "rt-every3"):
        assert entries[name]["schedule"] == "every 3 seconds"
        assert entries[name]["dispatched"] >= 1 and entries[name]["last_slot"] is not None
        assert entries[name]["paused"] is False
    nightly = entries["nightly-report"]
    assert nightly["schedule"] == "At 02:30 AM (30 2 * * *), Europe/Berlin"
    assert (nightly["task"], nightly["paused"], nightly["next_slot"]) == (
        "billing.nightly_report",
        True,
        None,
    )
    text = ok(cli(project, "status")).stdout
    assert "  nightly-report: At 02:30 AM (30 2 * * *), Europe/Berlin; paused; " in text

    row = ok(cli(project, "describe", "send-reminders", "--count", "2")).stdout.splitlines()
    assert row[:2] == [
        "entry 'send-reminders' runs task billing.send_reminders (source django_celery_beat)",
        "every 3 seconds",
    ]
    cron = ok(cli(project, "describe", "nightly-report", "--count", "2", "--tz", "Europe/Berlin"))
    lines = cron.stdout.splitlines()
    assert lines[:2] == [
        "entry 'nightly-report' runs task billing.nightly_report (source django_celery_beat, "
        "paused)",
        "At 02:30 AM (30 2 * * *), Europe/Berlin",
    ]
    assert all("T02:30:00+0" in line for line in lines[2:4]), lines
    runtime = ok(cli(project, "describe", "rt-every3", "--count", "1")).stdout.splitlines()
    assert runtime[:2] == [
        "entry 'rt-every3' runs task billing.charge_cards (source runtime)",
        "every 3 seconds",
    ]
    assert "lock TTL 30s" in runtime
    assert "longest recorded runtime: none recorded yet" in runtime  # no worker ran it


def test_locks_and_unlock_list_and_release_the_database_locks(project: CeleryCluster) -> None:
    lock = DatabaseLock(using="postgres")
    lease = lock.acquire("task:billing.charge_cards", ttl=60)
    assert lease is not None

    held = json.loads(ok(cli(project, "locks", "--json")).stdout)
    rows = [row for row in held if row["key"] == "task:billing.charge_cards"]
    assert len(rows) == 1, "the beat store's locks and the task backend are one table"
    (row,) = rows
    assert (row["holder"], row["kind"], row["fence"]) == (process.owner(), "task", lease.fence)
    assert 50 < row["remaining"] <= 60
    assert row["store"] == "beat store and task backend database 'default'"

    released = ok(cli(project, "unlock", "task:billing.charge_cards", "--yes"))
    assert released.stdout == (
        "beat store and task backend database 'default': released 'task:billing.charge_cards'\n"
    )
    assert lock.holder("task:billing.charge_cards") is None
    again = cli(project, "unlock", "task:billing.charge_cards", "--yes")
    assert again.returncode == 1
    assert again.stdout.endswith(": 'task:billing.charge_cards' is not held\n")


def test_check_on_the_database_store_checks_the_database_and_no_redis_master(
    project: CeleryCluster,
) -> None:
    good = cli(project, "check")
    assert good.returncode == 0, good.stdout
    lines = good.stdout.splitlines()
    assert "OK    settings valid (slot store 'database', mode active)" in lines
    name, host = (connections["postgres"].settings_dict[k] for k in ("NAME", "HOST"))
    assert f"OK    database 'default' answers (postgresql, {host}/{name})" in lines
    assert "OK    database 'default': the app's migrations are applied" in lines
    assert (
        "OK    schedule sources read: 4 entries (from beat_schedule, django_celery_beat)" in lines
    )
    assert "master" not in good.stdout

    empty = f"{name}_empty"
    with psycopg.connect(dbname="postgres", **server(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{empty}"')
        try:
            unmigrated = cli(project, "check", DEMO_DB_NAME=empty)
        finally:
            admin.execute(f'DROP DATABASE "{empty}"')
    assert unmigrated.returncode == 1, unmigrated.stdout
    assert "Traceback" not in unmigrated.stderr, unmigrated.stderr
    error = next(x for x in unmigrated.stdout.splitlines() if "migrations" in x)
    assert error.startswith(
        "ERROR database 'default': the app's migrations are not applied (singleton_beat."
        "0001_initial, "
    )
    assert error.endswith("); run `manage.py migrate`")

    away = cli(project, "check", DEMO_DB_PORT=str(free_port()))
    assert away.returncode == 1, away.stdout
    assert "Traceback" not in away.stderr, away.stderr
    (error,) = [x for x in away.stdout.splitlines() if x.startswith("ERROR database")]
    assert error.startswith("ERROR database 'default' does not answer: OperationalError")


def server() -> dict[str, Any]:
    given = connections["postgres"].settings_dict
    return {"host": given["HOST"], "port": given["PORT"], "user": given["USER"]}


def test_check_reports_every_problem_at_once_past_a_bad_setting(project: CeleryCluster) -> None:
    """A misspelt or refused setting does not stop ``check``: the database and every
    source's entries are still checked, and each error is printed once."""
    from django_celery_beat.models import PeriodicTask

    row = PeriodicTask.objects.using("postgres").get(name="send-reminders")
    row.pk, row.name, row.task = None, "ghost-row", "billing.ghost"
    PeriodicTask.objects.using("postgres").bulk_create([row])  # save() checks on 'default'
    ghost = (
        "ERROR entry 'ghost-row' (django_celery_beat): task 'billing.ghost' is not registered "
        "in this app; workers would discard its messages (check the name, and that its "
        "module is imported: imports, include or autodiscover_tasks)"
    )

    typo = cli(project, "check", DEMO_SETTINGS=json.dumps(
        {**DATABASE_STORE, "CELERY_SINGLETON_BEAT_MISFIRE_GRASE": 10}))  # fmt: skip
    assert typo.returncode == 1, typo.stdout
    lines = typo.stdout.splitlines()
    assert [line for line in lines if line.startswith("ERROR")] == [
        "ERROR CELERY_SINGLETON_BEAT_MISFIRE_GRASE is not a celery-singleton-beat setting "
        "(nothing reads it): did you mean 'CELERY_SINGLETON_BEAT_MISFIRE_GRACE'?",
        ghost,
    ]
    assert "OK    database 'default': the app's migrations are applied" in lines
    assert "OK    entry 'send-reminders' (django_celery_beat): every 3 seconds" in lines

    alias = cli(project, "check", DEMO_SETTINGS=json.dumps(
        {**DATABASE_STORE, "CELERY_SINGLETON_BEAT_DATABASE": "reports"}))  # fmt: skip
    assert alias.returncode == 1, alias.stdout
    errors = [line for line in alias.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, errors
    assert errors[0].startswith("ERROR CELERY_SINGLETON_BEAT_DATABASE = 'reports' is not valid")
    assert errors[1] == ghost
    assert "Traceback" not in typo.stderr + alias.stderr


def test_status_and_locks_with_the_database_down_say_what_they_could_not_read(
    project: CeleryCluster,
) -> None:
    away = {"DEMO_DB_PORT": str(free_port())}
    status = cli(project, "status", "--json", **away)
    assert status.returncode == 2, status.stderr
    data = json.loads(status.stdout)
    assert data["health"] == "store unavailable"
    unread = [p for p in data["problems"] if p.startswith("the schedule source")]
    assert [p.partition(" could not")[0] for p in unread] == [
        "the schedule source 'django_celery_beat'",
        "the schedule source 'runtime'",
    ]
    assert all(p.endswith(": its entries are not listed") for p in unread)
    entries = {e["name"]: e for e in data["entries"]}
    assert sorted(entries) == ["charge-cards", "sync-ledger"]
    assert {(e["last_slot"], e["dispatched"], e["skipped"]) for e in entries.values()} == {
        (None, None, None)
    }
    text = cli(project, "status", **away)
    assert text.stdout.startswith("cluster: store unavailable\n")
    assert "dispatched and skipped unknown (the store did not answer)" in text.stdout
    assert "none yet" not in text.stdout

    locks = cli(project, "locks", **away)
    assert locks.returncode == 2
    assert locks.stdout == (
        "the locks of the beat store and task backend database 'default' could not be read\n"
    )

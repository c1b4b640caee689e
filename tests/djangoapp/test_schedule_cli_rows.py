"""``singleton-beat schedule`` beside django-celery-beat's rows, as an operator runs it (a
subprocess on the test's PostgreSQL database and Redis masters): a row's name is not
free for a runtime entry, and a row can be paused and resumed like any entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from celery import Celery
from django.db import connections
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from celery_singleton_beat.sources.schedule_document import ScheduleDocument
from celery_singleton_beat.testing import RedisServer
from tests.support.clusters import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]

SETTINGS = {"singleton_beat_schedule_source": ["django_celery_beat", "runtime"]}


def cli(masters: list[RedisServer], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.djangoapp.dcb_settings",
        "DCB_DB_NAME": connections["postgres"].settings_dict["NAME"],
        "TEST_MASTERS": ",".join(m.url for m in masters),
        "TEST_SETTINGS": json.dumps(SETTINGS),
    }
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.djangoapp.dcb_app", "singleton-beat",
         "schedule", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_row_name_is_refused_for_a_runtime_entry_and_the_row_pauses_and_resumes(
    three_masters: list[RedisServer],
) -> None:
    every = IntervalSchedule.objects.using("postgres").create(every=30, period="seconds")
    PeriodicTask.objects.using("postgres").create(name="nightly", task="record", interval=every)

    taken = cli(three_masters, "add", "nightly", "record", "--every", "5")
    assert taken.returncode == 1
    assert taken.stderr == (
        "Error: name = 'nightly' is not valid: a name no other schedule source gives "
        "('nightly' is an entry of 'django_celery_beat': change it there, or choose another "
        "name).\n"
    )
    paused = cli(three_masters, "pause", "nightly")
    assert (paused.returncode, paused.stdout) == (0, "paused 'nightly'\n"), paused.stderr
    listed = json.loads(cli(three_masters, "list", "--json").stdout)
    assert (listed["entries"], sorted(listed["paused"])) == ({}, ["nightly"])
    resumed = cli(three_masters, "resume", "nightly")
    assert (resumed.returncode, resumed.stdout) == (0, "resumed 'nightly'\n"), resumed.stderr
    assert json.loads(cli(three_masters, "list", "--json").stdout)["paused"] == {}


def test_run_now_of_a_row_asks_for_the_row_s_message_and_an_unknown_name_lists_the_rows(
    three_masters: list[RedisServer],
) -> None:
    every = IntervalSchedule.objects.using("postgres").create(every=30, period="seconds")
    PeriodicTask.objects.using("postgres").create(
        name="nightly", task="record", interval=every, args='["n"]', queue="reports"
    )
    asked = cli(three_masters, "run-now", "nightly")
    assert asked.returncode == 0, asked.stderr
    run_id = asked.stdout.removeprefix("run now of 'nightly': ").strip()
    app = Celery("rows", broker="memory://", set_as_current=False)
    app.conf.singleton_beat_redis_urls = ",".join(m.url for m in three_masters)
    store = ScheduleDocument.for_app(app, 0.5)
    try:
        run = store.read()[1]["runs"][run_id]
    finally:
        store.close()
    assert {k: run[k] for k in ("entry", "task", "args", "kwargs")} == {
        "entry": "nightly", "task": "record", "args": ["n"], "kwargs": {},
    }  # fmt: skip
    assert run["options"]["queue"] == "reports"
    unknown = cli(three_masters, "run-now", "nightlly")
    assert (unknown.returncode, unknown.stderr) == (
        1, "Error: name = 'nightlly' is not valid: the name of an entry of a schedule "
        "source, one of 'nightly'.\n",
    )  # fmt: skip


def test_resume_of_an_entry_not_paused_says_so(three_masters: list[RedisServer]) -> None:
    every = IntervalSchedule.objects.using("postgres").create(every=30, period="seconds")
    PeriodicTask.objects.using("postgres").create(name="nightly", task="record", interval=every)
    resumed = cli(three_masters, "resume", "nightly")
    assert (resumed.returncode, resumed.stdout) == (
        0, "'nightly' is not paused: nothing to resume\n",
    ), resumed.stderr  # fmt: skip

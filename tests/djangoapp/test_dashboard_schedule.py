"""The dashboard's schedule: the entries of every source (``beat_schedule`` and
django-celery-beat's rows) with their source, who paused an entry and since when, and
the runs asked for now; on a real Redis master, inside a test's transaction (as a request
with ``ATOMIC_REQUESTS`` runs)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from celery import Celery
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from celery_singleton_beat import schedule
from celery_singleton_beat.testing import RedisServer

models = pytest.importorskip("django_celery_beat.models")
pytestmark = pytest.mark.django_db

APP = Celery("dashboard-schedule", broker="memory://", set_as_current=False)


@pytest.fixture
def staff(client: Client, redis_cluster: Any, settings: Any) -> Client:
    (master,) = redis_cluster(1)
    master: RedisServer
    APP.conf.update(
        singleton_beat_redis_urls=master.url,
        singleton_beat_schedule_source=["beat_schedule", "django_celery_beat"],
        beat_schedule={"charge": {"task": "billing.charge", "schedule": 5.0}},
    )
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:APP"
    nightly = models.CrontabSchedule.objects.create(minute="30", hour="2", timezone="Europe/Berlin")
    models.PeriodicTask.objects.create(name="nightly", task="reports.nightly", crontab=nightly)
    client.force_login(User.objects.create_superuser("ops", password="pw"))
    return client


def rows(client: Client) -> dict[str, dict[str, Any]]:
    page = client.get(reverse("admin:singleton_beat_dashboard"), {"window": "1h"})
    assert page.status_code == 200
    return {row["name"]: row for row in page.context["schedules"]}


def text(client: Client) -> str:
    html = client.get(reverse("admin:singleton_beat_dashboard")).content.decode()
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_entries_of_beat_schedule_and_of_django_celery_beats_rows_are_listed_with_their_source(
    staff: Client,
) -> None:
    found = rows(staff)
    assert {name: row["source"] for name, row in found.items()} == {
        "charge": "beat_schedule", "nightly": "django_celery_beat",
    }  # fmt: skip
    assert found["nightly"]["words"] == "At 02:30 AM (30 2 * * *), Europe/Berlin"
    first = found["nightly"]["next"][0].astimezone(dt.timezone.utc)
    assert (first.hour, first.minute) in {(0, 30), (1, 30)}, "02:30 in Berlin"


def test_a_paused_entry_shows_who_paused_it_and_since_when_and_no_next_times(
    staff: Client,
) -> None:
    schedule.pause(APP, "nightly", by="alice")
    at = dt.datetime.fromtimestamp(schedule.paused(APP)["nightly"]["at"] / 1000, dt.timezone.utc)
    nightly = rows(staff)["nightly"]
    assert (nightly["paused"], nightly["paused_by"], nightly["paused_at"]) == (True, "alice", at)
    assert nightly["next"] == []
    assert f"paused by alice since {at:%Y-%m-%d %H:%M:%S}" in text(staff)


def test_a_run_asked_for_now_shows_pending_with_who_asked_and_its_slot_entry(
    staff: Client,
) -> None:
    run_id = schedule.run_now(APP, "charge", by="bob")
    (shown,) = rows(staff)["charge"]["runs_now"]
    assert (shown["id"], shown["state"], shown["by"], shown["slot_entry"]) == (
        run_id, "pending", "bob", f"charge@run-now:{run_id}",
    )  # fmt: skip
    assert (shown["outcome"], shown["status"]) == ("", "")
    assert "asked by bob" in text(staff)


def test_next_times_keep_within_the_entrys_start_and_end_time(staff: Client) -> None:
    bounds = {"start_time": "2030-01-01T00:00:00Z", "end_time": "2030-01-01T00:00:12Z"}
    APP.conf.beat_schedule = {
        "charge": {"task": "billing.charge", "schedule": 5.0,
                   "options": {"singleton_beat": bounds}},
    }  # fmt: skip
    utc = dt.timezone.utc
    assert [t.astimezone(utc) for t in rows(staff)["charge"]["next"]] == [
        dt.datetime(2030, 1, 1, 0, 0, s, tzinfo=utc) for s in (0, 5, 10)
    ]

"""Schedule control in a real browser (Debian's chromium, playwright): an admin pauses an
entry of a running beat replica, runs it now and resumes it; the replica follows, the
dashboard shows the pause (by whom) and the run now, and the run shows up in the slot
decisions. The demo's schedule is the code's ``beat_schedule`` and django-celery-beat's
rows (made by ``manage.py demo_schedule``); the dashboard lists both. The screenshots are
kept in ``tests-artifacts/schedule-control.png`` and ``tests-artifacts/dashboard-control.png``."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.contrib.auth.models import User
from django.db import connections

from celery_singleton_beat.testing import CeleryCluster, RedisServer, wait_for
from django_celery_singleton_beat.models import ScheduleAction, SlotDispatch
from tests.djangoapp.browser import ARTIFACTS, chromium_page, log_in
from tests.djangoapp.project import PROJECT, demo_env

PREFIX = "browser-control:"
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

#: the Celery app the admin acts through (SINGLETON_BEAT_CELERY_APP points here)
CONTROL_APP = Celery("control", set_as_current=False)


@pytest.fixture
def cluster(tmp_path: Path, redis_cluster: Any, settings: Any) -> Iterator[CeleryCluster]:
    redis: RedisServer = redis_cluster(1)[0]
    database = connections["default"].settings_dict["NAME"]
    env = demo_env(redis, DEMO_DB_NAME=str(database), DEMO_KEY_PREFIX=PREFIX)
    CONTROL_APP.conf.update(
        singleton_beat_redis_urls=[redis.url],
        singleton_beat_key_prefix=PREFIX,
        beat_schedule={  # the demo's, as its settings make it with DEMO_EVERY=1
            "charge-cards": {"task": "billing.charge_cards", "schedule": 1.0},
            "sync-ledger": {"task": "billing.sync_ledger", "schedule": 2.0},
        },
        singleton_beat_schedule_source=["beat_schedule", "django_celery_beat"],
    )
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:CONTROL_APP"
    subprocess.run(
        [sys.executable, "manage.py", "demo_schedule"],
        cwd=PROJECT, env={**os.environ, **env}, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    running = CeleryCluster(tmp_path, "demo_site", env)
    try:
        yield running
    finally:
        running.stop()


def decided(entry: str, after: float) -> list[SlotDispatch]:
    since = dt.datetime.fromtimestamp(after, dt.timezone.utc)
    return list(SlotDispatch.objects.filter(entry=entry, slot__gt=since, outcome="dispatched"))


def schedule_row(page: Any, name: str) -> Any:
    return page.locator(f'#schedule tr.schedule:has(td[data-entry="{name}"])')


def the_dashboard_shows_the_pause_and_the_run_now(
    page: Any, url: str, run: ScheduleAction, paused: float, replica: Any
) -> None:
    """The paused mark with the user and the time, the run now pending or sent (then sent,
    its slot dispatched), and the entries of both sources with theirs."""
    extra = f"charge-cards@run-now:{run.run_id}"
    page.goto(url)
    charge = schedule_row(page, "charge-cards")
    since = dt.datetime.fromtimestamp(paused, dt.timezone.utc)
    state = charge.locator(".sb-paused").inner_text()
    assert state.startswith(f"paused by admin since {since:%Y-%m-%d %H:%M}"), state
    asked = charge.locator(f'.sb-run-now[data-run-id="{run.run_id}"]')
    assert asked.get_attribute("data-state") in ("pending", "sent")
    assert asked.get_attribute("data-slot-entry") == extra
    assert "asked by admin" in asked.inner_text()
    wait_for(lambda: decided(extra, 0), 10, f"the run now\n{replica.text()}")
    page.reload()
    asked = schedule_row(page, "charge-cards").locator(".sb-run-now")
    assert asked.get_attribute("data-state") == "sent"
    assert "slot dispatched" in asked.inner_text()
    sources = {
        name: schedule_row(page, name).locator(".sb-source").inner_text()
        for name in ("charge-cards", "sync-ledger", "send-reminders", "nightly-report")
    }
    assert sources == {
        "charge-cards": "beat_schedule", "sync-ledger": "beat_schedule",
        "send-reminders": "django_celery_beat", "nightly-report": "django_celery_beat",
    }  # fmt: skip
    assert "Europe/Berlin" in schedule_row(page, "nightly-report").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-control.png"), full_page=True)


def test_an_admin_pauses_runs_now_and_resumes_an_entry_and_the_dashboard_shows_both(
    cluster: CeleryCluster, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the test reads rows while playwright's event loop runs in this thread (no await)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    cluster.start_worker("worker", pool="threads", concurrency=2)
    replica = cluster.start_replica("beat-1")
    User.objects.create_superuser("admin", "admin@example.com", "s3cret-pw")
    wait_for(lambda: decided("charge-cards", 0), 60, f"a first slot\n{replica.text()}")
    wait_for(lambda: decided("send-reminders", 0), 30, f"a slot of a table's row\n{replica.text()}")
    with chromium_page(height=900) as page:
        control = f"{live_server.url}/admin/singleton_beat/scheduleaction/control/"
        log_in(page, control)
        row = page.locator('tr.sb-entry[data-entry="charge-cards"]')
        row.locator("input.sb-toggle").click()
        paused = time.time()
        row = page.locator('tr.sb-entry[data-entry="charge-cards"]')
        assert row.locator(".sb-state").inner_text() == "paused (admin)"
        time.sleep(5)
        assert decided("charge-cards", paused + 2) == [], "nothing sent while paused"
        page.locator('tr.sb-entry[data-entry="charge-cards"] input.sb-run-now').click()
        assert "Run now: charge-cards (" in page.inner_text("ul.messagelist")
        page.screenshot(path=str(ARTIFACTS / "schedule-control.png"), full_page=True)
        (run,) = ScheduleAction.objects.filter(action="run_now")
        extra = f"charge-cards@run-now:{run.run_id}"

        dashboard = f"{live_server.url}/admin/singleton_beat/taskrun/dashboard/?window=5m"
        the_dashboard_shows_the_pause_and_the_run_now(page, dashboard, run, paused, replica)

        page.goto(control)
        page.locator('tr.sb-entry[data-entry="charge-cards"] input.sb-toggle').click()
        resumed = time.time()
        wait_for(lambda: decided("charge-cards", resumed + 1), 10, "slots after the resume")
        page.goto(f"{live_server.url}/admin/singleton_beat/slotdispatch/?q={run.run_id}")
        assert extra in page.inner_text("#result_list")
    actions = ScheduleAction.objects.order_by("id")
    assert [(a.action, a.user) for a in actions] == [
        ("pause", "admin"), ("run_now", "admin"), ("resume", "admin"),
    ]  # fmt: skip
    assert len(decided(extra, 0)) == 1

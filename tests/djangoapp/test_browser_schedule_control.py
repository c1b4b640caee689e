"""Schedule control in a real browser (Debian's chromium, playwright): an admin pauses an
entry of a running beat replica, resumes it and runs it now; the replica follows, and the
run now shows up in the slot decisions. The screenshot is kept in
``tests-artifacts/schedule-control.png``."""

from __future__ import annotations

import datetime as dt
import os
import shutil
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
from tests.djangoapp.project import demo_env

ARTIFACTS = Path(__file__).resolve().parents[2] / "tests-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
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
        beat_schedule={"charge-cards": {"task": "billing.charge_cards", "schedule": 1.0}},
    )
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:CONTROL_APP"
    running = CeleryCluster(tmp_path, "demo_site", env)
    try:
        yield running
    finally:
        running.stop()


def decided(entry: str, after: float) -> list[SlotDispatch]:
    since = dt.datetime.fromtimestamp(after, dt.timezone.utc)
    return list(SlotDispatch.objects.filter(entry=entry, slot__gt=since, outcome="dispatched"))


def test_an_admin_pauses_resumes_and_runs_an_entry_now_from_the_browser(
    cluster: CeleryCluster, live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does it as root)")
    from playwright.sync_api import sync_playwright

    # the test reads rows while playwright's event loop runs in this thread (no await)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    cluster.start_worker("worker", pool="threads", concurrency=2)
    replica = cluster.start_replica("beat-1")
    User.objects.create_superuser("admin", "admin@example.com", "s3cret-pw")
    wait_for(lambda: decided("charge-cards", 0), 60, f"a first slot\n{replica.text()}")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_server.url}/admin/singleton_beat/scheduleaction/control/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "s3cret-pw")
            page.click("input[type=submit]")
            row = page.locator('tr.sb-entry[data-entry="charge-cards"]')
            row.locator("input.sb-toggle").click()
            paused = time.time()
            row = page.locator('tr.sb-entry[data-entry="charge-cards"]')
            assert row.locator(".sb-state").inner_text() == "paused (admin)"
            time.sleep(5)
            assert decided("charge-cards", paused + 2) == [], "nothing sent while paused"
            row.locator("input.sb-toggle").click()
            page.locator('tr.sb-entry[data-entry="charge-cards"] input.sb-run-now').click()
            assert "Run now: charge-cards (" in page.inner_text("ul.messagelist")
            page.screenshot(path=str(ARTIFACTS / "schedule-control.png"), full_page=True)
            (run,) = ScheduleAction.objects.filter(action="run_now")
            extra = f"charge-cards@run-now:{run.run_id}"
            wait_for(lambda: decided(extra, 0), 10, f"the run now\n{replica.text()}")
            wait_for(lambda: decided("charge-cards", paused + 6), 10, "slots after the resume")
            page.goto(f"{live_server.url}/admin/singleton_beat/slotdispatch/?q={run.run_id}")
            assert extra in page.inner_text("#result_list")
        finally:
            browser.close()
    actions = ScheduleAction.objects.order_by("id")
    assert [(a.action, a.user) for a in actions] == [
        ("pause", "admin"), ("resume", "admin"), ("run_now", "admin"),
    ]  # fmt: skip
    assert len(decided(extra, 0)) == 1

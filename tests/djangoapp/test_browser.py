"""The dashboard in a real browser: Debian's chromium, driven by playwright-python.

A beat replica and a worker of the demo project record into this test's SQLite database;
the admin is served by pytest-django's live server. The screenshot is kept in
``tests-artifacts/dashboard.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.contrib.auth.models import User
from django.db import connections

from celery_singleton_beat.testing import CeleryCluster, RedisServer, wait_for
from django_celery_singleton_beat.models import TaskRun
from tests.djangoapp.browser import ARTIFACTS, chromium_page, log_in
from tests.djangoapp.project import demo_env

PREFIX = "browser-test:"
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

#: the Celery app the dashboard reads (SINGLETON_BEAT_CELERY_APP points here)
DASHBOARD_APP = Celery("dashboard", set_as_current=False)


@pytest.fixture
def recording(tmp_path: Path, redis_cluster: Any, settings: Any) -> Iterator[CeleryCluster]:
    redis: RedisServer = redis_cluster(1)[0]
    database = connections["default"].settings_dict["NAME"]
    env = demo_env(redis, DEMO_DB_NAME=str(database), DEMO_KEY_PREFIX=PREFIX)
    DASHBOARD_APP.conf.update(
        singleton_beat_redis_urls=[redis.url],
        singleton_beat_key_prefix=PREFIX,
        beat_schedule={"charge-cards": {"task": "billing.charge_cards", "schedule": 1.0}},
    )
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:DASHBOARD_APP"
    cluster = CeleryCluster(tmp_path, "demo_site", env)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_dashboard_shows_recorded_runs_and_the_running_replica(
    recording: CeleryCluster, live_server: Any
) -> None:
    worker = recording.start_worker("worker-a", pool="prefork", concurrency=2)
    recording.start_worker("worker-b", pool="prefork", concurrency=2)
    replica = recording.start_replica("beat-1")
    User.objects.create_superuser("admin", "admin@example.com", "s3cret-pw")
    sender = Celery("sender", broker=recording.base_env["DEMO_BROKER_URL"], set_as_current=False)
    for _ in range(2):  # the second copy is skipped while the first holds the account's lock
        sender.send_task("billing.reconcile_account", args=[7, 2.0])
    wait_for(lambda: TaskRun.objects.filter(status="success").count() >= 12
             and TaskRun.objects.filter(status="skipped_duplicate").exists(), 60,
             f"12 recorded runs and a skip\n{replica.text()}\n{worker.text()}")  # fmt: skip
    recorded = set(TaskRun.objects.filter(status="success").values_list("task_id", flat=True))

    with chromium_page() as page:
        log_in(page, f"{live_server.url}/admin/singleton_beat/taskrun/dashboard/?window=5m")
        page.wait_for_selector("svg.singleton-timeline")
        assert "Singleton beat dashboard" in page.title()

        shown = set(page.eval_on_selector_all(
            "svg.singleton-timeline rect.run", "bars => bars.map(b => b.dataset.taskId)"
        ))  # fmt: skip
        assert recorded <= shown, f"runs missing from the timeline: {recorded - shown}"
        assert page.locator("svg.singleton-timeline path.skipped").count() >= 1
        cells = page.eval_on_selector_all(
            "#replicas tr.replica", "rows => rows.map(r => r.innerText)"
        )
        assert any(str(replica.popen.pid) in row for row in cells), cells
        assert page.locator("#schedule tr.schedule").count() == 1
        assert page.inner_text(".sb-zone") == "all times in UTC"
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \N{EN DASH} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
            page.inner_text(".sb-window"),
        )
        assert page.text_content("svg.singleton-timeline text.zone") == "UTC"
        states = page.eval_on_selector_all(
            "#legend-states .state", "items => items.map(i => i.dataset.state)"
        )
        assert states == ["success", "running", "retry", "failed", "skipped"]
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000

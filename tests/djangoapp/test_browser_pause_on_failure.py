"""An entry its ``pause_on_failure`` policy paused, in a real browser (Debian's chromium,
playwright): the control page shows who paused it and why, and Resume clears both the
pause and the count of failed runs. The pause is written by the worker's own code
(:func:`count_failure`, as a failing run's worker calls it); the screenshot is kept in
``tests-artifacts/pause-on-failure.png``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from django.contrib.auth.models import User

from celery_singleton_beat import schedule
from celery_singleton_beat.sources.schedule_document import ScheduleDocument
from celery_singleton_beat.tasks.failures import count_failure
from celery_singleton_beat.testing import RedisServer
from tests.djangoapp.browser import ARTIFACTS, chromium_page, log_in

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

APP = Celery("pause-on-failure", broker="memory://", set_as_current=False)
POLICY = {"singleton_beat": {"pause_on_failure": 2}}


@pytest.fixture(autouse=True)
def masters(redis_cluster: Any, settings: Any) -> Iterator[list[RedisServer]]:
    servers: list[RedisServer] = redis_cluster(1)
    APP.conf.update(
        singleton_beat_redis_urls=[servers[0].url],
        beat_schedule={"report": {"task": "reports.build", "schedule": 10.0, "options": POLICY}},
    )
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:APP"
    yield servers


def fail(slot: str) -> None:
    """What a worker does when a slot's run of ``report`` fails for the last time."""
    store = ScheduleDocument.for_app(APP, 0.5)
    try:
        store.edit(lambda doc: count_failure(doc, "report", slot, 2, "OSError: disk full"))
    finally:
        store.close()


def test_the_control_page_shows_why_an_entry_paused_on_failure_and_resume_clears_it(
    live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    User.objects.create_superuser("admin", "admin@example.com", "s3cret-pw")
    fail("2026-12-07T05:00:00.000Z")
    assert schedule.paused(APP) == {}, "one failure of two does not pause"
    fail("2026-12-07T05:00:10.000Z")
    reason = (
        "2 consecutive failed runs, the last of slot 2026-12-07T05:00:10.000Z: OSError: disk full"
    )
    with chromium_page(height=700) as page:
        log_in(page, f"{live_server.url}/admin/singleton_beat/scheduleaction/control/")
        row = page.locator('tr.sb-entry[data-entry="report"]')
        assert row.locator(".sb-state").inner_text() == f"paused (pause_on_failure) {reason}"
        assert row.locator(".sb-pause-reason").inner_text() == reason
        page.screenshot(path=str(ARTIFACTS / "pause-on-failure.png"), full_page=True)
        row.locator("input.sb-toggle").click()
        assert "Resume: report" in page.inner_text("ul.messagelist")
        row = page.locator('tr.sb-entry[data-entry="report"]')
        assert row.locator(".sb-state").inner_text() == "active"
    assert schedule.paused(APP) == {}
    store = ScheduleDocument.for_app(APP, 0.5)
    try:
        assert store.read()[1]["failures"] == {}, "resume counts failed runs afresh"
    finally:
        store.close()

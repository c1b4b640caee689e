"""Pause, resume and run now from the admin: POST only, CSRF-protected, staff with the
control permission only, each action recorded with its user; on real Redis masters."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from celery_singleton_beat import schedule
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.sources.schedule_document import ScheduleDocument
from celery_singleton_beat.tasks.failures import count_failure
from celery_singleton_beat.testing import RedisServer
from django_celery_singleton_beat.models import ScheduleAction

pytestmark = pytest.mark.django_db(transaction=True)

APP = Celery("control", broker="memory://", set_as_current=False)
PAGE = "admin:singleton_beat_control"


@pytest.fixture(autouse=True)
def masters(redis_cluster: Any, settings: Any) -> Iterator[list[RedisServer]]:
    servers: list[RedisServer] = redis_cluster(3)
    APP.conf.update(
        singleton_beat_redis_urls=",".join(s.url for s in servers),
        beat_schedule={
            "report": {"task": "reports.build", "schedule": 10.0, "args": [7]},
            "nightly": {"task": "reports.nightly", "schedule": crontab(minute=30, hour=2)},
        },
    )
    settings.SINGLETON_BEAT_CELERY_APP = "tests.djangoapp.test_schedule_control.APP"
    yield servers


def staff(name: str, *perms: str) -> Client:
    user = User.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def post(client: Client, action: str, entry: str, csrf: bool = True, **fields: str) -> Any:
    page = client.get(reverse(PAGE))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    data = {"entry": entry, **fields}
    if csrf:
        assert token is not None, "the page has a CSRF-protected form"
        data["csrfmiddlewaretoken"] = token.group(1)
    url = reverse("admin:singleton_beat_control_act", kwargs={"action": action})
    return client.post(url, data)


def runs() -> dict[str, Any]:
    store = ScheduleDocument.for_app(APP, 0.5)
    try:
        return dict(store.read()[1]["runs"])
    finally:
        store.close()


CONTROL = ("view_scheduleaction", "control_schedule")


def test_staff_with_the_control_permission_pause_resume_and_run_now_recorded_by_name() -> None:
    ops = staff("ops", *CONTROL)
    page = ops.get(reverse(PAGE)).content.decode()
    assert re.search(r'data-entry="report">\s*<td>report</td><td>beat_schedule</td>', page)
    assert re.search(
        r'data-entry="nightly">.*?class="sb-next">\d{4}-\d\d-\d\d 02:30:00', page, re.S
    )

    assert post(ops, "pause", "report").status_code == 302
    assert {n: p["by"] for n, p in schedule.paused(APP).items()} == {"report": "ops"}
    assert "paused (ops)" in ops.get(reverse(PAGE)).content.decode()
    assert post(ops, "resume", "report").status_code == 302
    assert schedule.paused(APP) == {}
    assert post(ops, "run_now", "report").status_code == 302
    (run_id,) = runs()
    assert {k: runs()[run_id][k] for k in ("entry", "task", "args", "by")} == {
        "entry": "report", "task": "reports.build", "args": [7], "by": "ops",
    }  # fmt: skip
    done = ScheduleAction.objects.order_by("id")
    assert [(a.entry, a.action, a.user, a.run_id) for a in done] == [
        ("report", "pause", "ops", ""),
        ("report", "resume", "ops", ""),
        ("report", "run_now", "ops", run_id),
    ]


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing() -> None:
    ops = staff("ops", *CONTROL)
    assert post(ops, "pause", "report", csrf=False).status_code == 403
    assert schedule.paused(APP) == {}
    assert ScheduleAction.objects.count() == 0


def test_staff_without_the_control_permission_see_the_page_but_cannot_act() -> None:
    viewer = staff("viewer", "view_scheduleaction")
    page = viewer.get(reverse(PAGE))
    assert page.status_code == 200 and b"sb-run-now" not in page.content
    url = reverse("admin:singleton_beat_control_act", kwargs={"action": "run_now"})
    assert viewer.post(url, {"entry": "report"}).status_code == 403
    assert (runs(), ScheduleAction.objects.count()) == ({}, 0)


def test_a_get_of_an_action_is_refused() -> None:
    ops = staff("ops", *CONTROL)
    url = reverse("admin:singleton_beat_control_act", kwargs={"action": "pause"})
    assert ops.get(url, {"entry": "report"}).status_code == 405
    assert schedule.paused(APP) == {}


def test_run_now_clicked_from_two_sessions_at_once_asks_for_one_run() -> None:
    sessions = [staff("ann", *CONTROL), staff("bob", *CONTROL)]
    go = threading.Barrier(2)
    codes: list[int] = []

    def click(client: Client) -> None:
        go.wait()
        codes.append(post(client, "run_now", "nightly").status_code)

    threads = [threading.Thread(target=click, args=(c,)) for c in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert codes == [302, 302]
    assert len(runs()) == 1
    ids = {a.user: a.run_id for a in ScheduleAction.objects.all()}
    assert ids == {"ann": next(iter(runs())), "bob": next(iter(runs()))}


def form_time(moment: dt.datetime) -> str:
    """As a ``datetime-local`` field sends it: the current time zone, no offset."""
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M:%S")


def test_a_backfill_asked_for_on_the_page_is_recorded_and_listed_with_its_counts() -> None:
    store = Runtime.of(APP).open_store(0.5)
    try:
        store.init([("report", 10_000)], round(time.time() * 1000))  # beat has seen it
    finally:
        store.close()
    ops = staff("ops", *CONTROL)
    end = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=1)
    start = end - dt.timedelta(minutes=10)
    answer = post(ops, "backfill", "report", start=form_time(start), end=form_time(end))
    assert answer.status_code == 302
    (asked,) = schedule.backfill_requests(APP)
    assert (asked["entry"], asked["by"], asked["total"], asked["state"]) == (
        "report", "ops", 60, "running",
    )  # fmt: skip
    done = ScheduleAction.objects.get()
    assert (done.entry, done.action, done.user, done.run_id) == (
        "report", "backfill", "ops", asked["id"],
    )  # fmt: skip
    page = ops.get(reverse(PAGE)).content.decode()
    row = re.search(rf'data-backfill="{asked["id"]}">(.*?)</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
    assert [cells[0], *cells[2:]] == ["report", "ops", "60", "0", "0", "0", "running"]


def test_a_backfill_the_api_refuses_is_shown_as_an_error_and_writes_nothing() -> None:
    ops = staff("ops", *CONTROL)
    now = timezone.now()
    answer = post(ops, "backfill", "nightly", start=form_time(now - dt.timedelta(hours=1)),
                  end=form_time(now + dt.timedelta(hours=1)))  # fmt: skip
    assert answer.status_code == 302
    page = ops.get(reverse(PAGE)).content.decode()
    assert "is not valid: a time not after now (later slots are beat&#x27;s)" in page
    missing = post(ops, "backfill", "nightly", start="", end=form_time(now))
    assert missing.status_code == 302
    shown = ops.get(reverse(PAGE)).content.decode()
    assert "Backfill: nightly: start = &#x27;&#x27; is not valid: a date and time such as" in shown
    assert (schedule.backfill_requests(APP), ScheduleAction.objects.count()) == ([], 0)


def test_an_entry_paused_on_failure_shows_why_and_resuming_it_counts_failures_afresh() -> None:
    store = ScheduleDocument.for_app(APP, 0.5)
    try:
        for slot in ("2026-12-07T05:00:00.000Z", "2026-12-07T05:00:10.000Z"):
            store.edit(lambda doc, s=slot: count_failure(doc, "report", s, 2, "OSError: disk full"))
    finally:
        store.close()
    reason = (
        "2 consecutive failed runs, the last of slot 2026-12-07T05:00:10.000Z: OSError: disk full"
    )
    assert schedule.paused(APP)["report"]["reason"] == reason

    ops = staff("ops", *CONTROL)
    page = ops.get(reverse(PAGE)).content.decode()
    assert f'(pause_on_failure) <span class="sb-pause-reason">{reason}</span>' in page
    assert post(ops, "resume", "report").status_code == 302
    store = ScheduleDocument.for_app(APP, 0.5)
    try:
        doc = store.read()[1]
    finally:
        store.close()
    assert (doc["paused"], doc["failures"]) == ({}, {})


def test_an_action_on_an_entry_gone_since_the_page_was_shown_is_an_error_message() -> None:
    ops = staff("ops", *CONTROL)
    for action in ("pause", "resume", "run_now"):
        done = post(ops, action, "gone")
        assert done.status_code == 302
        shown = ops.get(done["Location"]).content.decode()
        assert re.search(
            r'class="error">[^<]*gone: name = &#x27;gone&#x27; is not valid: the name of an '
            r"entry of a schedule source, one of &#x27;nightly&#x27;, &#x27;report&#x27;",
            shown,
        ), shown
    assert (schedule.paused(APP), runs(), ScheduleAction.objects.count()) == ({}, {}, 0)

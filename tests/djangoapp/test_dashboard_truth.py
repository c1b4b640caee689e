"""What the dashboard and the admin lists show is true to what happened: one time zone per
page, named; times to the second; a run in progress drawn apart from a failure, with a
legend; late dispatches shown."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from django_celery_singleton_beat.dashboard import timeline_svg
from django_celery_singleton_beat.models import SlotDispatch, TaskRun

pytestmark = pytest.mark.django_db
UTC = dt.timezone.utc
KOLKATA = zoneinfo.ZoneInfo("Asia/Kolkata")  # UTC+05:30 all year
NOW = dt.datetime.now(UTC)

#: the Celery app the dashboard reads here: a cron entry in Paris time, no Redis
APP = Celery("dashboard-truth", set_as_current=False)
APP.conf.update(
    timezone="Europe/Paris",
    beat_schedule={"nightly": {"task": "reports.nightly", "schedule": crontab("30", "2")}},
)


@pytest.fixture
def staff(client: Client, settings: Any) -> Client:
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:APP"
    client.force_login(User.objects.create_superuser("ops", password="pw"))
    return client


def run(**fields: Any) -> TaskRun:
    values: dict[str, Any] = {
        "task_id": "t1", "task_name": "billing.charge", "status": "success", "node": "w1@host",
        "pid": 10, "started_at": NOW - dt.timedelta(minutes=5), "entry": "charge",
    }  # fmt: skip
    values.update(fields)
    return TaskRun.objects.create(**values)


def dispatch(slot: dt.datetime, late: float | None, outcome: str = "dispatched") -> SlotDispatch:
    return SlotDispatch.objects.create(
        entry="charge", slot=slot, outcome=outcome, replica="host:1", decided_at=slot,
        late=late, publishes=1,
    )  # fmt: skip


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_every_dashboard_time_is_in_the_sites_zone_and_the_page_names_it(
    staff: Client, settings: Any
) -> None:
    settings.TIME_ZONE = "Asia/Kolkata"
    run()
    page = staff.get(reverse("admin:singleton_beat_dashboard"), {"window": "1h"})
    html = page.content.decode()
    since, until = page.context["since"], page.context["until"]
    window = re.search(r'<span class="sb-window">(.*?)</span>', html)
    assert window is not None
    first, last = (f"{t.astimezone(KOLKATA):%Y-%m-%d %H:%M:%S}" for t in (since, until))
    assert window.group(1) == f"{first} \N{EN DASH} {last}"
    assert "all times in Asia/Kolkata" in text(html)
    svg = page.context["timeline"]
    assert re.search(r'<text class="zone"[^>]*>Asia/Kolkata</text>', svg)
    last_tick = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', svg)[-1]
    assert last_tick == f"{until.astimezone(KOLKATA):%m-%d %H:%M:%S}"
    nightly = page.context["schedules"][0]["next"][0].astimezone(KOLKATA)
    shown = re.search(r'<tr class="schedule">.*?</tr>', html, flags=re.DOTALL)
    assert shown is not None
    assert f"{nightly:%Y-%m-%d %H:%M:%S}" in shown.group(0)
    assert (nightly.hour, nightly.minute) in {(6, 0), (7, 0)}, "02:30 in Paris is 7:00 or 6:00"
    assert " UTC" not in text(html) and "CET" not in html and "CEST" not in html


@pytest.mark.parametrize(
    ("model", "expected"),
    [("taskrun", ["2026-03-04 05:06:07 UTC", "2026-03-04 05:06:05 UTC"]),
     ("slotdispatch", ["2026-03-04 05:06:05 UTC", "2026-03-04 05:06:05 UTC"])],
)  # fmt: skip
def test_admin_lists_show_times_to_the_second(
    staff: Client, settings: Any, model: str, expected: list[str]
) -> None:
    settings.TIME_ZONE = "UTC"
    slot = dt.datetime(2026, 3, 4, 5, 6, 5, tzinfo=UTC)
    run(started_at=slot + dt.timedelta(seconds=2, milliseconds=300), slot=slot)
    dispatch(slot, late=0.02)
    page = text(staff.get(reverse(f"admin:singleton_beat_{model}_changelist")).content.decode())
    for value in expected:
        assert value in page


def test_admin_detail_pages_show_times_to_the_second(staff: Client, settings: Any) -> None:
    settings.TIME_ZONE = "UTC"
    slot = dt.datetime(2026, 3, 4, 5, 6, 5, tzinfo=UTC)
    ran = run(started_at=slot + dt.timedelta(seconds=2, milliseconds=300), slot=slot)
    decided = dispatch(slot, late=0.02)
    pages = {
        "taskrun": (ran.pk, ["2026-03-04 05:06:05 UTC", "2026-03-04 05:06:07 UTC"]),
        "slotdispatch": (decided.pk, ["2026-03-04 05:06:05 UTC"]),
    }
    for model, (pk, expected) in pages.items():
        url = reverse(f"admin:singleton_beat_{model}_change", args=[pk])
        page = text(staff.get(url).content.decode())
        for value in expected:
            assert value in page, f"{model}: {value} not on its page"


def test_a_lock_row_shows_its_expiry_to_the_second() -> None:
    from django_celery_singleton_beat.admin import LockAdmin
    from django_celery_singleton_beat.models import Lock

    lock = Lock(key="k", token="t", expires_ms=1_772_600_767_250, fence=1)
    assert LockAdmin.expires(None, lock) == "2026-03-04 05:06:07 UTC"  # type: ignore[arg-type]


def test_a_run_in_progress_is_drawn_apart_from_a_failure() -> None:
    runs = [
        run(task_id="running", status="started", started_at=NOW - dt.timedelta(seconds=30)),
        run(task_id="failed", status="failure", started_at=NOW - dt.timedelta(seconds=50),
            finished_at=NOW - dt.timedelta(seconds=40)),
        run(task_id="ok", status="success", started_at=NOW - dt.timedelta(seconds=20),
            finished_at=NOW - dt.timedelta(seconds=10)),
    ]  # fmt: skip
    svg, _legend = timeline_svg(runs, NOW - dt.timedelta(minutes=1), NOW)
    bars = dict(re.findall(r'<rect class="run" data-task-id="(\w+)"([^>]*)>', svg))
    assert re.search(r'data-state="running"', bars["running"])
    assert re.search(r'data-state="failed"', bars["failed"])
    assert 'stroke-dasharray="4 2"' in bars["running"] and 'stroke="#c23b3b"' not in bars["running"]
    assert 'stroke="#c23b3b"' in bars["failed"] and "stroke-dasharray" not in bars["failed"]
    assert "stroke" not in bars["ok"]
    x = float(re.search(r' x="([\d.]+)"', bars["running"]).group(1))  # type: ignore[union-attr]
    width = float(re.search(r'width="([\d.]+)"', bars["running"]).group(1))  # type: ignore[union-attr]
    assert x + width == pytest.approx(1100 - 10), "a running bar reaches now"


def test_the_legend_explains_running_failed_and_skipped_runs(staff: Client) -> None:
    run(task_id="running", status="started", started_at=NOW - dt.timedelta(seconds=30))
    html = staff.get(reverse("admin:singleton_beat_dashboard"), {"window": "1h"}).content.decode()
    legend = re.search(r'<p class="sb-legend" id="legend-states">(.*?)</p>', html, re.DOTALL)
    assert legend is not None
    states = re.findall(r'<span class="state" data-state="(\w+)">', legend.group(1))
    assert states == ["success", "running", "retry", "failed", "skipped"]
    words = text(legend.group(1))
    assert "still running (drawn up to now)" in words
    assert "failed or lost its lock" in words
    assert 'stroke-dasharray="4 2"' in legend.group(1), "the swatch is drawn as the bar is"


def test_late_dispatches_are_counted_per_entry_with_the_latest(staff: Client) -> None:
    base = NOW.replace(microsecond=0) - dt.timedelta(minutes=10)
    for i, late in enumerate([0.2, 3.5, 12.0, 0.9]):
        dispatch(base + dt.timedelta(seconds=i), late)
    dispatch(base + dt.timedelta(seconds=9), None, outcome="skipped_misfire")
    page = staff.get(reverse("admin:singleton_beat_dashboard"), {"window": "1h"})
    charge = next(e for e in page.context["entries"] if e["name"] == "charge")
    assert (charge["late"], charge["late_max"]) == (2, 12.0)
    cell = re.search(r'<td class="late">(.*?)</td>', page.content.decode(), re.DOTALL)
    assert cell is not None and text(cell.group(1)).strip() == "2 (latest 12.0 s)"


def test_slots_skipped_behind_the_previous_run_count_as_overlapped_not_as_duplicates(
    staff: Client,
) -> None:
    base = NOW.replace(microsecond=0) - dt.timedelta(minutes=10)
    s1, s2, s3 = (base + dt.timedelta(seconds=i) for i in range(3))
    run(task_id="s1", slot=s1, started_at=s1, finished_at=s1 + dt.timedelta(seconds=2.5))
    run(task_id="s1", slot=s1, status="skipped_duplicate", started_at=s1, holder="a@w1/1")
    run(task_id="s2", slot=s2, status="skipped_duplicate", started_at=s2, holder="a@w1/1")
    for copy in range(2):  # slot 3 published twice, both copies behind slot 1's run
        run(task_id="s3", slot=s3, status="skipped_duplicate", holder="a@w1/1",
            started_at=s3 + dt.timedelta(milliseconds=copy))  # fmt: skip
    page = staff.get(reverse("admin:singleton_beat_dashboard"), {"window": "1h"})
    charge = next(e for e in page.context["entries"] if e["name"] == "charge")
    assert (charge["executed"], charge["duplicates"], charge["overlapped"]) == (1, 1, 2)
    html = page.content.decode()
    assert re.search(r'<td class="overlapped"><span class="sb-warn">2</span></td>', html)
    assert re.search(r'<td class="duplicates">1</td>', html)

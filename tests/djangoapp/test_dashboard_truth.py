"""What the dashboard and the admin lists show is true to what happened: every time column
named with its zone; times to the second; a run in progress drawn apart from a failure,
with a legend; late dispatches shown; expected slots counted from each version of an
entry's schedule, and slots that passed while it was paused counted as missed.

The counting tests run the scheduler in this process on an injected clock over a real
Redis master, with the Django app's recorder writing its records into the test database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import logging
import re
import time
import zoneinfo
from collections.abc import Callable, Hashable, Iterator, Mapping
from html import unescape
from typing import Any, ClassVar

import pytest
from celery import Celery
from celery.schedules import crontab, solar
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from celery_singleton_beat import schedule
from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.slots import (
    BoundedSlots,
    CronSlots,
    IntervalSlots,
    OnceSlots,
    Slots,
    SolarSlots,
)
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.sources import ScheduleSource
from django_celery_singleton_beat import history, models
from django_celery_singleton_beat.conf import AppSettings
from django_celery_singleton_beat.dashboard import entry_rows, schedule_view, timeline_svg
from django_celery_singleton_beat.models import SlotDispatch, TaskRun
from django_celery_singleton_beat.recorder import Recorder

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
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


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


# -- expected, dispatched and missed, from the records of a beat running in this process --

START = dt.datetime(2026, 1, 1, 0, 0, 0, 300_000, tzinfo=UTC).timestamp()


class EditedSource(ScheduleSource):
    """The schedule a test edits while the scheduler runs it (see :func:`edit`)."""

    name = "edited"
    specs: ClassVar[dict[str, dict[str, Any]]] = {}
    revision: ClassVar[int] = 0

    def version(self) -> Hashable:
        return EditedSource.revision

    def hinted(self) -> bool:
        return True  # read at every tick: an edit is seen at the next one

    def entries(self) -> Mapping[str, dict[str, Any]]:
        return dict(EditedSource.specs)


def edit(**specs: dict[str, Any]) -> None:
    EditedSource.specs = specs
    EditedSource.revision += 1


@dataclasses.dataclass
class Beat:
    """A scheduler in this process on a clock the test moves, its records written."""

    app: Celery
    scheduler: Scheduler
    recorder: Recorder
    now: float = START

    def run(self, until: float, step: float = 0.25) -> None:
        """Tick every ``step`` seconds of the clock up to ``START + until``."""
        while self.now <= START + until:
            self.scheduler.tick()
            self.now += step

    def follow(self, seen: Callable[[Scheduler], bool]) -> None:
        """Tick with the clock standing until the scheduler has followed a change."""
        deadline = time.monotonic() + 10
        while not seen(self.scheduler):
            assert time.monotonic() < deadline, "the scheduler did not follow the change"
            self.scheduler.tick()
            time.sleep(0.05)

    def entry(self, name: str) -> dict[str, Any]:
        """The dashboard's row of ``name`` for the window up to now (on the test's clock)."""
        assert self.recorder.flush(10)
        until = dt.datetime.fromtimestamp(self.now, UTC)
        view = schedule_view(self.app)
        rows = entry_rows(self.app, until - dt.timedelta(minutes=15), until, "default", view)
        return next(row for row in rows if row["name"] == name)


@pytest.fixture
def beat(redis_cluster: Any) -> Iterator[Beat]:
    (master,) = redis_cluster(1)
    app = Celery("history", broker="memory://", set_as_current=False)
    app.conf.update(
        singleton_beat_redis_urls=[master.url],
        singleton_beat_schedule_source=f"{__name__}.EditedSource",
    )
    EditedSource.specs, EditedSource.revision = {}, 0
    recorder = Recorder(AppSettings())
    unsubscribe = events.subscribe(recorder.on_event)
    running: Beat | None = None
    try:
        edit(tick={"task": "reports.tick", "schedule": 5.0})
        Runtime.of(app).clock = lambda: running.now if running is not None else START
        running = Beat(app, Scheduler(app=app), recorder)
        yield running
    finally:
        unsubscribe()
        if running is not None:
            running.scheduler.close()
        recorder.stop()
        gc.collect()  # closes the writer thread's connection: the test database can be dropped


def paused(name: str) -> Callable[[Scheduler], bool]:
    return lambda scheduler: scheduler.plans[name].policy.paused


def every(seconds: float) -> Callable[[Scheduler], bool]:
    fingerprint = f"every:{seconds * 1000:g}"
    return lambda scheduler: scheduler.plans["tick"].slots.fingerprint() == fingerprint


@pytest.mark.django_db(transaction=True)
def test_expected_counts_each_version_of_an_edited_interval_and_missed_the_paused_slots(
    beat: Beat,
) -> None:
    beat.run(until=31)  # every 5 s: 00:00:05 … 00:00:30, 6 slots
    edit(tick={"task": "reports.tick", "schedule": 12.0})
    beat.follow(every(12))  # from 00:00:31.25 every 12 s: 36, 48, 60 sent
    beat.run(until=61)
    schedule.pause(beat.app, "tick", by="ops")
    beat.follow(paused("tick"))
    beat.run(until=110)  # 72, 84, 96 and 108 pass while paused
    schedule.resume(beat.app, "tick")
    beat.follow(lambda scheduler: not paused("tick")(scheduler))  # 108 sent late, 3 skipped
    beat.run(until=121)  # 120 sent
    tick = beat.entry("tick")
    counts = (tick["expected"], tick["dispatched"], tick["missed"], tick["misfired"])
    assert counts == (14, 11, 3, 3)


@pytest.mark.django_db(transaction=True)
def test_a_slot_due_when_an_edit_is_seen_is_decided_under_the_old_version(beat: Beat) -> None:
    """Edited just before 00:00:10 and seen at 00:00:10.05, in the tick the slot falls
    due in: the old version's slot 10 is sent, the new version owes the slots after."""
    beat.run(until=9.5)  # 00:00:05; the last tick at 00:00:09.8
    edit(tick={"task": "reports.tick", "schedule": 4.0})
    beat.run(until=16)  # seen at 00:00:10.05: 10 sent, then 12 and 16
    tick = beat.entry("tick")
    counts = (tick["expected"], tick["dispatched"], tick["missed"], tick["undecided"])
    assert counts == (4, 4, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_slots_that_pass_while_an_entry_is_still_paused_count_as_missed(beat: Beat) -> None:
    beat.run(until=11)  # 00:00:05, 00:00:10
    schedule.pause(beat.app, "tick", by="ops")
    beat.follow(paused("tick"))
    beat.run(until=31)  # 15, 20, 25, 30 pass, undecided while the entry stays paused
    tick = beat.entry("tick")
    assert (tick["expected"], tick["dispatched"], tick["missed"], tick["undecided"]) == (6, 2, 4, 4)
    assert tick["paused"] is True


@pytest.mark.django_db(transaction=True)
def test_an_entry_removed_from_the_schedule_is_expected_nothing_after_it_left(beat: Beat) -> None:
    beat.run(until=21)  # 00:00:05 … 00:00:20
    edit()
    beat.follow(lambda scheduler: "tick" not in scheduler.plans)
    beat.run(until=61)
    tick = beat.entry("tick")
    assert (tick["configured"], tick["expected"], tick["dispatched"], tick["missed"]) == (
        False, 4, 4, 0,
    )  # fmt: skip


# -- every time column names its zone; the store as it describes itself ------------------


def columns(html: str, within: str) -> dict[str, list[str]]:
    """The columns of the first table after ``within`` (text of the page): header text ->
    cell texts."""
    found = re.search(rf"{re.escape(within)}.*?<table[^>]*>(.*?)</table>", html, re.DOTALL)
    assert found is not None, f"no table after {within}"
    heads = [text(h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", found.group(1), re.S)]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", found.group(1), re.DOTALL)[1:]
    cells = [[text(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]
    full = [row for row in cells if len(row) == len(heads)]
    return {head: [row[i] for row in full] for i, head in enumerate(heads)}


def time_columns(html: str, within: str) -> dict[str, list[str]]:
    """The columns whose cells show a time of day (to the second)."""
    return {
        head: cells
        for head, cells in columns(html, within).items()
        if any(re.search(r"\b\d\d:\d\d:\d\d\b", cell) for cell in cells)
    }


@pytest.fixture
def berlin(
    staff: Client, settings: Any, redis_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> Celery:
    """The dashboard's app (a new one: an app keeps its store) on a real master, the site
    in Berlin time."""
    (master,) = redis_cluster(1)
    settings.TIME_ZONE = "Europe/Berlin"
    monkeypatch.setitem(globals(), "BERLIN", Celery("berlin", set_as_current=False))
    BERLIN.conf.update(
        singleton_beat_redis_urls=[master.url], timezone="Europe/Paris",
        beat_schedule={
            "charge": {"task": "billing.charge", "schedule": 5.0},
            "nightly": {"task": "reports.nightly", "schedule": crontab("30", "2")},
        },
    )  # fmt: skip
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:BERLIN"
    return BERLIN


#: the dashboard's app for the zone tests, on the test's master (see :func:`berlin`)
BERLIN = Celery("berlin", set_as_current=False)


def test_every_time_column_of_the_dashboard_names_the_zone_its_times_are_in(
    staff: Client, berlin: Celery
) -> None:
    schedule.pause(berlin, "nightly", by="alice")
    schedule.run_now(berlin, "charge", by="bob")
    html = staff.get(reverse("admin:singleton_beat_dashboard"), {"window": "1h"}).content.decode()
    shown = time_columns(html, 'id="schedule"')
    assert sorted(shown) == [
        "Next 5 times (Europe/Berlin)", "Run now (times in Europe/Berlin)",
        "State (times in Europe/Berlin)",
    ]  # fmt: skip
    at = schedule.paused(berlin)["nightly"]["at"] / 1000
    since = dt.datetime.fromtimestamp(at, zoneinfo.ZoneInfo("Europe/Berlin"))
    state = shown["State (times in Europe/Berlin)"]
    assert f"paused by alice since {since:%Y-%m-%d %H:%M:%S}" in state
    words = columns(html, 'id="schedule"')["When"]
    assert words == ["every 5 seconds", "At 02:30 AM (30 2 * * *), Europe/Paris"]


def test_the_control_page_names_the_zone_of_its_next_times(staff: Client, berlin: Celery) -> None:
    html = staff.get(reverse("admin:singleton_beat_control")).content.decode()
    shown = time_columns(html, 'class="singleton-control"')
    assert list(shown) == ["next times (Europe/Berlin)"]
    nightly = dt.datetime.strptime(shown["next times (Europe/Berlin)"][1][:19], "%Y-%m-%d %H:%M:%S")
    assert (nightly.hour, nightly.minute) == (2, 30), "02:30 in Paris is 02:30 in Berlin"
    assert "UTC" not in text(html)


@pytest.mark.django_db(transaction=True)  # the database store refuses a request's transaction
def test_the_dashboard_names_a_database_store_and_shows_no_masters_line(
    staff: Client, settings: Any
) -> None:
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:DATABASE_APP"
    html = text(staff.get(reverse("admin:singleton_beat_dashboard")).content.decode())
    assert f"Store: slot store -> {settings.EXPECTED_VENDOR} database 'default' (" in html
    assert "masters" not in html.lower()


def test_the_dashboard_names_the_redis_store_and_each_masters_state(
    staff: Client, berlin: Celery
) -> None:
    url = berlin.conf.singleton_beat_redis_urls[0]
    html = text(staff.get(reverse("admin:singleton_beat_dashboard")).content.decode())
    assert f"Store: lock masters -> {url} (majority 1 of 1)" in html
    master = url.removeprefix("redis://").rsplit("/", 1)[0]
    assert re.search(rf"Redis masters: {re.escape(master)} up \(", html)


#: the dashboard's app on the database slot store (no Redis)
DATABASE_APP = Celery("database-store", broker="memory://", set_as_current=False)
DATABASE_APP.conf.update(singleton_beat_store="database")


# -- counting from records written directly ------------------------------------------------

#: the dashboard's app with one entry every second and no masters (beat_schedule alone)
EVERY_SECOND = Celery("every-second", broker="memory://", set_as_current=False)
EVERY_SECOND.conf.update(beat_schedule={"charge": {"task": "billing.charge", "schedule": 1.0}})
BASE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def decided(entry: str, second: int, outcome: str, slots: int = 1) -> SlotDispatch:
    at = BASE + dt.timedelta(seconds=second)
    return SlotDispatch.objects.create(
        entry=entry, slot=at, outcome=outcome, replica="host:1", decided_at=at, slots=slots,
        publishes=int(outcome == "dispatched"),
    )  # fmt: skip


def counted(app: Celery, name: str, until: int) -> dict[str, Any]:
    end = BASE + dt.timedelta(seconds=until)
    rows = entry_rows(app, BASE - dt.timedelta(hours=1), end, "default", schedule_view(app))
    return next(row for row in rows if row["name"] == name)


def test_slots_held_back_by_the_overlap_policy_are_overlapped_not_missed() -> None:
    for second in (1, 2, 4, 6):
        decided("charge", second, "dispatched")
    for second in (3, 5):
        decided("charge", second, "skipped_overlap")
    charge = counted(EVERY_SECOND, "charge", until=6)
    assert (charge["expected"], charge["dispatched"], charge["missed"], charge["overlapped"]) == (
        6, 4, 0, 2,
    )  # fmt: skip


def test_an_entry_gone_unseen_from_the_schedule_is_expected_nothing_after_its_last_slot() -> None:
    models.ScheduleVersion.objects.create(
        entry="retired", since=BASE, slots='{"every_ms": 2000, "anchor_ms": 0}', replica="host:1"
    )
    for second in (2, 4, 6):
        decided("retired", second, "dispatched")
    retired = counted(EVERY_SECOND, "retired", until=600)
    assert (retired["configured"], retired["expected"], retired["missed"]) == (False, 3, 0)


def test_a_misfire_counts_the_slots_its_row_stands_for() -> None:
    models.ScheduleVersion.objects.create(
        entry="charge", since=BASE, slots='{"every_ms": 1000, "anchor_ms": 0}', replica="host:1"
    )
    decided("charge", 1, "dispatched")
    decided("charge", 4, "skipped_misfire", slots=3)
    decided("charge", 5, "dispatched")
    charge = counted(EVERY_SECOND, "charge", until=5)
    assert (charge["expected"], charge["dispatched"], charge["missed"], charge["misfired"]) == (
        5, 2, 3, 3,
    )  # fmt: skip
    assert charge["undecided"] == 0


@pytest.mark.django_db(transaction=True)
def test_each_entry_s_version_is_kept_when_a_start_reports_more_entries_than_the_buffer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replica reports every entry's version at start: 1,000 entries beside a buffer of
    100 records each get their version, none is dropped, and a second replica's start
    reporting the same versions writes nothing."""
    entries = [f"customer-{i}" for i in range(1000)]
    recorder = Recorder(AppSettings(recorder_buffer=100))
    try:
        with caplog.at_level(logging.WARNING, logger="django_celery_singleton_beat.recorder"):
            for replica, second in (("a:1", 0), ("b:2", 60)):
                for entry in entries:
                    recorder.on_event(events.EntryScheduled(
                        entry=entry, since=BASE + dt.timedelta(seconds=second),
                        slots=IntervalSlots(3_600_000, 0), replica=replica,
                    ))  # fmt: skip
                assert recorder.flush(60)
    finally:
        recorder.stop()
        gc.collect()
    kept = models.ScheduleVersion.objects.values_list("entry", "since", "replica")
    assert sorted(kept) == sorted((entry, BASE, "a:1") for entry in entries)
    assert not [r.getMessage() for r in caplog.records if "drop" in r.getMessage()]


@pytest.mark.django_db(transaction=True)
def test_a_schedule_version_every_replica_reports_is_recorded_once() -> None:
    recorder = Recorder(AppSettings())
    try:
        for replica, second, every_ms in (("a:1", 0, 5000), ("b:2", 1, 5000), ("a:1", 30, 12000),
                                          ("b:2", 31, 12000), ("c:3", 90, 12000)):  # fmt: skip
            recorder.on_event(events.EntryScheduled(
                entry="tick", since=BASE + dt.timedelta(seconds=second),
                slots=IntervalSlots(every_ms, 0), replica=replica,
            ))  # fmt: skip
            assert recorder.flush(5)
        recorder.on_event(events.EntryScheduled(
            entry="tick", since=BASE + dt.timedelta(seconds=95), slots=None, replica="c:3",
        ))  # fmt: skip
        assert recorder.flush(5)
    finally:
        recorder.stop()
        gc.collect()  # closes the writer thread's connection: the test database can be dropped
    versions = models.ScheduleVersion.objects.order_by("since")
    assert list(versions.values_list("since", "slots", "replica")) == [
        (BASE, '{"anchor_ms": 0, "every_ms": 5000}', "a:1"),
        (BASE + dt.timedelta(seconds=30), '{"anchor_ms": 0, "every_ms": 12000}', "a:1"),
        (BASE + dt.timedelta(seconds=95), "", "c:3"),
    ]


@pytest.mark.parametrize(
    "slots",
    [
        IntervalSlots(12_000, 1_767_225_600_000),
        CronSlots(crontab("*/15", "9-17", "mon-fri"), zoneinfo.ZoneInfo("Europe/Berlin")),
        CronSlots(crontab("0", "3"), UTC),
        SolarSlots(solar("sunrise", 52.52, 13.40)),
        OnceSlots(1_767_225_600_000),
        BoundedSlots(IntervalSlots(60_000), 1_767_225_600_000, 1_767_312_000_000),
    ],
    ids=["interval", "cron-berlin", "cron-utc", "solar", "once", "bounded"],
)
def test_a_schedule_version_keeps_slots_the_dashboard_counts_as_beat_did(slots: Slots) -> None:
    kept = history.decode(history.encode(slots))
    assert kept is not None and kept.fingerprint() == slots.fingerprint()
    assert first_slots(kept) == first_slots(slots)


def first_slots(slots: Slots, count: int = 5) -> list[int]:
    found: list[int] = []
    t: int | None = 1_767_225_600_000 - 1
    while len(found) < count and t is not None and (t := slots.next_after(t)) is not None:
        found.append(t)
    return found

"""The dashboard's counts after an edit and a pause, in a real browser (Debian's chromium,
playwright), against the runs counted from the task's own log.

A beat replica and a worker of the demo project record into this test's SQLite database;
the admin is served by pytest-django's live server, in Berlin time. The entry is a
django-celery-beat row running ``journal.append`` (``tests/djangoapp/journal.py``), which
appends each execution to a file. An admin edits its interval from 2 s to 5 s on
django-celery-beat's admin page, pauses it on the schedule control page for two slots or
more, resumes it, and pauses it again; then the dashboard's Expected, Dispatched and
Missed are compared with what the file and the schedule say. The screenshot is kept in
``tests-artifacts/dashboard-history.png``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from django.contrib.auth.models import User
from django.db import connections

from celery_singleton_beat.testing import CeleryCluster, Process, RedisServer, wait_for
from django_celery_singleton_beat.models import SlotDispatch
from tests.djangoapp.browser import ARTIFACTS, chromium_page, log_in
from tests.djangoapp.project import PROJECT, demo_env
from tests.support.clusters import slot_ms

models = pytest.importorskip("django_celery_beat.models")

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "browser-history:"
BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

#: the Celery app the admin reads and acts through (SINGLETON_BEAT_CELERY_APP points here)
HISTORY_APP = Celery("history", set_as_current=False)


@pytest.fixture
def cluster(
    tmp_path: Path, redis_cluster: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CeleryCluster]:
    redis: RedisServer = redis_cluster(1)[0]
    database = connections["default"].settings_dict["NAME"]
    env = demo_env(
        redis, DEMO_DB_NAME=str(database), DEMO_KEY_PREFIX=PREFIX, DEMO_EVERY="60",
        PYTHONPATH=os.pathsep.join([str(PROJECT), str(ROOT)]),
    )  # fmt: skip
    app = Celery("history", set_as_current=False)  # a new app: an app keeps its store
    app.conf.update(
        singleton_beat_redis_urls=[redis.url],
        singleton_beat_key_prefix=PREFIX,
        beat_schedule={  # the demo's, as its settings make it with DEMO_EVERY=60
            "charge-cards": {"task": "billing.charge_cards", "schedule": 60.0},
            "sync-ledger": {"task": "billing.sync_ledger", "schedule": 120.0},
        },
        singleton_beat_schedule_source=["beat_schedule", "django_celery_beat"],
    )
    monkeypatch.setitem(globals(), "HISTORY_APP", app)
    settings.SINGLETON_BEAT_CELERY_APP = f"{__name__}:HISTORY_APP"
    settings.TIME_ZONE = "Europe/Berlin"
    running = CeleryCluster(tmp_path, "demo_site", env)
    try:
        yield running
    finally:
        running.stop()


def journal(path: Path) -> list[int]:
    """The slots of the executions the task logged, in ms."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [slot_ms(line["slot"]) for line in lines]


def dispatched() -> int:
    return SlotDispatch.objects.filter(entry="journal", outcome="dispatched").count()


def logged(replica: Process, message: str, after: float = 0.0) -> float | None:
    """When the replica first logged ``message`` after ``after`` (epoch seconds). The
    demo's processes log in its ``TIME_ZONE``, UTC."""
    for stamp in re.findall(
        rf"^\[(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}}): INFO/MainProcess\] {message}",
        replica.text(), flags=re.MULTILINE,
    ):  # fmt: skip
        at = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()
        if at > after:
            return at
    return None


def slots(every: int, after: float, until: float) -> set[int]:
    """The slots of an interval of ``every`` seconds in (after, until] (ms): beat anchors
    an interval on a whole multiple of it."""
    step = every * 1000
    first = int(after * 1000) // step + 1
    return {k * step for k in range(first, int(until * 1000) // step + 1)}


def control(page: Any, url: str, button: str) -> float:
    """Click ``button`` (Pause, Resume) of the journal's row on the schedule control page."""
    page.goto(url)
    row = page.locator('tr.sb-entry[data-entry="journal"]')
    assert row.locator("input.sb-toggle").get_attribute("value") == button
    row.locator("input.sb-toggle").click()
    return time.time()


def row_by_header(page: Any, table: str, entry: str) -> dict[str, str]:
    """The cells of ``entry``'s row in ``table``, by their column's header (as written)."""
    found: dict[str, str] = page.eval_on_selector(
        table,
        r"""(t, entry) => {
            const words = e => e.textContent.replace(/\s+/g, ' ').trim();
            const heads = [...t.querySelectorAll('thead th')].map(words);
            const row = [...t.querySelectorAll('tbody tr')]
                .find(r => r.cells[0] && r.cells[0].dataset.entry === entry);
            return Object.fromEntries(heads.map((h, i) => [h, words(row.cells[i])]));
        }""",
        entry,
    )
    return found


def time_columns(page: Any, table: str) -> dict[str, str]:
    """Header text of every column of ``table`` whose cells show a time of day, with the
    zone its header names (``.sb-tz``, empty if none)."""
    found: dict[str, str] = page.eval_on_selector(
        table,
        r"""t => {
            const heads = [...t.querySelectorAll('thead th')];
            const rows = [...t.querySelectorAll('tbody tr')];
            const out = {};
            heads.forEach((th, i) => {
                if (rows.some(r => /\b\d\d:\d\d:\d\d\b/.test(r.cells[i]?.innerText || ''))) {
                    const tz = th.querySelector('.sb-tz');  // as written (CSS upper-cases)
                    const words = e => e.textContent.replace(/\s+/g, ' ').trim();
                    out[words(th)] = tz ? words(tz) : '';
                }
            });
            return out;
        }""",
    )
    return found


def test_the_dashboard_counts_an_edited_and_paused_entry_as_its_task_ran(  # noqa: PLR0915  (one scenario, told in order)
    cluster: CeleryCluster, live_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the test reads rows while playwright's event loop runs in this thread (no await)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    log = tmp_path / "journal.jsonl"
    interval = models.IntervalSchedule.objects.create(every=2, period="seconds")
    models.PeriodicTask.objects.create(
        name="journal", task="journal.append", interval=interval, args=json.dumps([str(log)])
    )
    User.objects.create_superuser("admin", "admin@example.com", "s3cret-pw")
    worker = cluster.start_worker("worker", pool="threads", args=("-I", "tests.djangoapp.journal"))
    replica = cluster.start_replica("beat-1")
    wait_for(lambda: len(journal(log)) >= 3, 60, f"3 runs\n{replica.text()}\n{worker.text()}")
    loaded = logged(replica, r"singleton beat: \d+ entries loaded")
    assert loaded is not None
    with chromium_page() as page:
        log_in(
            page,
            f"{live_server.url}/admin/django_celery_beat/intervalschedule/{interval.pk}/change/",
        )
        page.fill("#id_every", "5")
        page.click("input[name=_save]")
        edited = time.time() - 0.5
        wait_for(lambda: logged(replica, "singleton beat: schedule changed", edited), 10,
                 f"the edit followed\n{replica.text()}")  # fmt: skip
        changed = logged(replica, "singleton beat: schedule changed", edited)
        assert changed is not None
        wait_for(lambda: len([s for s in journal(log) if s > changed * 1000]) >= 2, 20,
                 f"2 runs every 5 s\n{replica.text()}")  # fmt: skip

        url = f"{live_server.url}/admin/singleton_beat/scheduleaction/control/"
        looked = time.time()
        page.goto(url)
        control_zones = time_columns(page, "table.sb-entries")
        next_time = page.locator('tr.sb-entry[data-entry="journal"] .sb-next').inner_text()
        paused = control(page, url, "Pause")
        time.sleep(12)  # two 5 s slots or more pass while paused
        resumed = control(page, url, "Resume")
        wait_for(lambda: len([s for s in journal(log) if s > resumed * 1000]) >= 1, 20,
                 f"a run after the resume\n{replica.text()}")  # fmt: skip
        final = control(page, url, "Pause")
        time.sleep(8)  # the pause is followed, and a slot or more passes while paused
        wait_for(lambda: len(journal(log)) == dispatched(), 20, "every dispatched slot ran")

        page.goto(f"{live_server.url}/admin/singleton_beat/taskrun/dashboard/?window=15m")
        counts = row_by_header(page, "#entries table", "journal")
        shown = {name: counts[name] for name in ("Expected", "Dispatched", "Missed")}
        window = page.inner_text(".sb-window")
        assert page.inner_text(".sb-zone") == "all times in Europe/Berlin"
        assert page.text_content("svg.singleton-timeline text.zone") == "Europe/Berlin"
        zones = time_columns(page, "#schedule table")
        state = page.locator(
            '#schedule tr.schedule:has(td[data-entry="journal"]) .sb-paused'
        ).inner_text()
        store = page.locator(".sb-store").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"), full_page=True)

    # what the task's log and the schedule say: every 2 s from beat's start up to the edit,
    # every 5 s after it; the slots that passed while paused are missed, those of the first
    # pause skipped by the misfire policy on resume (it sent the newest one, late)
    until_text = window.split("\N{EN DASH}")[1].strip()
    until = dt.datetime.strptime(until_text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BERLIN)
    ran = journal(log)
    assert len(ran) == len(set(ran)), "each slot ran once"
    expected = slots(2, loaded, changed) | slots(5, changed, until.timestamp())
    assert set(ran) <= expected, sorted(set(ran) - expected)
    missed = expected - set(ran)
    skipped = {s for s in missed if paused * 1000 < s <= (resumed + 3) * 1000}
    undecided = {s for s in missed if s > final * 1000}
    assert missed == skipped | undecided, "only slots that passed while paused are missed"
    assert skipped, "the misfire policy skipped the older slots of the first pause"
    assert undecided, "slots passed while the entry stays paused"
    misfires = "a misfire" if len(skipped) == 1 else "misfires"
    assert shown == {
        "Expected": str(len(expected)),
        "Dispatched": str(len(ran)),
        "Missed": f"{len(missed)} ({len(skipped)} skipped by {misfires}) "
        f"({len(undecided)} undecided)",
    }

    # every time shown is in Berlin time, and its column says so
    assert control_zones == {"next times (Europe/Berlin)": "(Europe/Berlin)"}, control_zones
    first = dt.datetime.strptime(next_time.split(",")[0], "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=BERLIN
    )
    assert 0 < first.timestamp() - looked <= 5 + 3, f"{next_time}: the next 5 s slot in Berlin"
    assert zones == {
        "State (times in Europe/Berlin)": "(times in Europe/Berlin)",
        "Next 5 times (Europe/Berlin)": "(Europe/Berlin)",
    }, zones
    assert abs(until.timestamp() - time.time()) < 60, f"{until_text} is now, in Berlin"
    since_paused = dt.datetime.fromtimestamp(final, BERLIN)
    assert state.startswith(f"paused by admin since {since_paused:%Y-%m-%d %H:%M}"), state
    url = HISTORY_APP.conf.singleton_beat_redis_urls[0]
    assert store == [f"Store: lock masters -> {url} (majority 1 of 1)"]

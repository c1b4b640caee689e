"""Three beat replicas on django-celery-beat's tables, edited through its models while they
run: every slot executed once, each change followed within 2 s, the run counts right.

The replicas run ``tests.djangoapp.dcb_app`` (``tests.beat.app`` on this test's PostgreSQL
database) with ``singleton_beat_schedule_source = "django_celery_beat"``; the test edits
``PeriodicTask`` rows as django-celery-beat's admin does (``save()``, which bumps
``PeriodicTasks``), routed to that database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)

from celery_singleton_beat.testing import wait_for
from tests.support.clusters import BeatCluster, interval_slots, slot_ms

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, databases=["postgres"])]

SETTINGS = {"singleton_beat_schedule_source": "django_celery_beat", "singleton_beat_claim_ttl": 1.0}
#: A change is acted on by every replica within this many seconds.
PICKUP = 2.0
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def dcb_settings() -> dict[str, Any]:
    return SETTINGS


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.create(every=seconds, period=IntervalSchedule.SECONDS)


def task(name: str, **fields: Any) -> PeriodicTask:
    return PeriodicTask.objects.create(name=name, task="record", args=json.dumps([name]), **fields)


def slots(rows: list[dict[str, Any]], entry: str) -> Counter[int]:
    return Counter(slot_ms(r["slot"]) for r in rows if r["entry"] == entry)


def within(counts: Counter[int], start: float, end: float) -> list[int]:
    return sorted(s for s in counts if start * 1000 < s <= end * 1000)


def changes_seen(log: str) -> list[float]:
    """When a replica logged that it followed a schedule change (epoch seconds)."""
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
                        r"singleton beat: schedule changed", log, flags=re.MULTILINE)  # fmt: skip
    return [
        dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp() for s in stamps
    ]


def seen_within(seen: list[float], edited: float) -> bool:
    """A change was followed within PICKUP seconds of an edit saved just before ``edited``."""
    return any(edited - 0.5 <= t <= edited + PICKUP for t in seen)


def missing(counts: Counter[int], expected: set[int]) -> list[int]:
    return sorted(expected - set(counts))


def test_a_django_celery_beat_schedule_edited_while_three_replicas_run_is_followed_exactly_once(  # noqa: PLR0915  (one scenario, told in order)
    cluster: BeatCluster,
) -> None:
    hour = dt.datetime.now(NEW_YORK).hour
    cron = CrontabSchedule.objects.create(minute="*", hour=str((hour + 6) % 24), timezone=NEW_YORK)
    tick = task("tick", interval=every(1))
    task("cron", crontab=cron)
    cluster.start_worker()
    replicas = [cluster.start_replica(name) for name in ("r1", "r2", "r3")]
    wait_for(lambda: len(cluster.executions()) >= 2, 40, "first executions")
    start = time.time()
    time.sleep(2)
    # the crontab now matches every minute of this hour and the next, in New York only
    cron.hour = f"{hour},{(hour + 1) % 24}"
    cron.save()
    cron_changed = time.time()
    time.sleep(2)
    added = task("added", interval=every(2))
    added_at = time.time()
    time.sleep(3)
    cluster.kill(replicas[0])
    once = task("once", interval=every(1), one_off=True)
    at = dt.datetime.fromtimestamp(round(time.time()) + 4, dt.timezone.utc)
    clocked = task("clocked", clocked=ClockedSchedule.objects.create(clocked_time=at), one_off=True)
    created = time.time()
    time.sleep(3)
    tick.refresh_from_db()  # as the admin's form loads the row it saves
    tick.enabled = False
    tick.save()
    off = time.time()
    time.sleep(4)
    tick.refresh_from_db()
    tick.enabled = True
    tick.save()
    on = time.time()
    replicas.append(cluster.start_replica("r4"))
    # "added" slowed to every 4 s just before a slot of both schedules, the save seen
    # just after it: the slot is still sent (as the 2 s schedule's), none is lost
    boundary = (int(time.time()) // 4 + 2) * 4
    time.sleep(max(0.0, boundary - 0.2 - time.time()))
    added.refresh_from_db()
    added.interval = every(4)
    added.save()
    slower = time.time()
    time.sleep(max(0.0, cron_changed + 63 - time.time()))
    for replica in replicas[1:]:
        replica.popen.terminate()
        replica.popen.wait(10)
    end = time.time()
    time.sleep(2)  # the last messages reach the worker
    rows = cluster.executions()

    for replica in replicas[1:3]:  # the two replicas that ran through every edit
        seen = changes_seen(replica.text())
        edits = (cron_changed, added_at, created, off, on, slower)
        late = [t for t in edits if not seen_within(seen, t)]
        assert late == [], f"{replica.name} did not follow the edits at {late} within {PICKUP} s"
    counts = {name: slots(rows, name) for name in ("tick", "cron", "added", "once", "clocked")}
    assert {n: [s for s, k in c.items() if k > 1] for n, c in counts.items()} == {
        n: [] for n in counts
    }, "no slot executed twice"
    last = end - 1.5
    assert missing(counts["tick"], interval_slots(1, start, off)) == []
    assert within(counts["tick"], off + PICKUP, on) == []
    assert missing(counts["tick"], interval_slots(1, on + PICKUP, last)) == []
    assert within(counts["added"], 0, added_at) == []
    assert missing(counts["added"], interval_slots(2, added_at + PICKUP, boundary)) == []
    assert missing(counts["added"], interval_slots(4, boundary, last)) == []
    assert [s for s in within(counts["added"], slower + PICKUP, last) if s % 4000] == []
    minutes = within(counts["cron"], cron_changed + PICKUP, last)
    assert within(counts["cron"], 0, cron_changed) == []
    assert missing(counts["cron"], interval_slots(60, cron_changed + PICKUP, last)) == []
    assert len(minutes) >= 1 and all(s % 60_000 == 0 for s in minutes)
    assert sum(counts["once"].values()) == 1
    assert list(counts["clocked"]) == [round(at.timestamp() * 1000)]

    for name, entry in {"once": once, "clocked": clocked}.items():
        entry.refresh_from_db()
        assert (entry.enabled, entry.total_run_count) == (False, 1), name
        assert entry.last_run_at is not None
    for name in ("tick", "added"):
        row = PeriodicTask.objects.get(name=name)
        assert row.total_run_count == sum(counts[name].values()), name
        newest = max(counts[name]) / 1000
        assert row.last_run_at is not None
        assert 0 <= row.last_run_at.timestamp() - newest < 1.5, name


def test_a_replica_dying_right_after_marking_a_slot_done_leaves_its_run_counted(
    cluster: BeatCluster,
) -> None:
    """A replica SIGKILLed (``os._exit``) just after marking a slot it published done: the
    row's ``total_run_count`` still counts that run, and every other, once."""
    task("beat", interval=every(1))
    cluster.start_worker()
    cluster.start_replica("steady")
    crasher = cluster.start_replica(
        "crasher", scheduler="tests.beat.app:CrashAfterMark", TEST_CRASH_ENTRY="beat"
    )
    wait_for(lambda: not crasher.alive(), 60, f"the crash hook\n{crasher.text()}")
    time.sleep(3)  # the steady replica sends the crasher's next slots
    row = PeriodicTask.objects.get(name="beat")
    row.enabled = False
    row.save(update_fields=["enabled"])  # as the admin would, without its stale counts
    time.sleep(PICKUP + 2)  # followed, and what was sent has run
    counts = slots(cluster.executions(), "beat")
    assert crasher.popen.returncode == 17
    assert [s for s, k in counts.items() if k > 1] == [], "no slot executed twice"
    row = PeriodicTask.objects.get(name="beat")
    assert row.total_run_count == len(counts), "each run counted once, the crasher's too"

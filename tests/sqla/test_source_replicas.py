"""Three beat replicas on sqlalchemy-celery-beat's tables, edited through its models while
they run (RabbitMQ, PostgreSQL, no Redis): each change followed within 2 s, every slot
executed once, ``total_run_count`` equal to the executions. Beside them, the library's
own ``DatabaseScheduler`` on three replicas, which sends every slot three times."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)

from celery_singleton_beat.connections.sqlalchemy import engine_for
from celery_singleton_beat.testing import wait_for
from tests.support.clusters import interval_slots, slot_ms
from tests.support.databases import SqlAlchemyDatabases
from tests.support.sqlalchemy_cluster import SqlBeatCluster, sqlalchemy_beat_cluster

pytestmark = pytest.mark.slow

SETTINGS = {
    "singleton_beat_schedule_source": "sqlalchemy_celery_beat",
    "singleton_beat_claim_ttl": 1.0,
}
#: A change is acted on by every replica within this many seconds.
PICKUP = 2.0
NEW_YORK = "America/New_York"
#: sqlalchemy-celery-beat's own scheduler, as its users start it (``-S sqlalchemy``).
ITS_SCHEDULER = "sqlalchemy_celery_beat.schedulers:DatabaseScheduler"


@pytest.fixture
def postgresql(sqlalchemy_databases: SqlAlchemyDatabases, tmp_path: Path) -> Iterator[str]:
    url = sqlalchemy_databases.url("postgresql", tmp_path)
    yield url
    with engine_for(url).begin() as connection:
        for table in ("periodictask", "intervalschedule", "crontabschedule",
                      "clockedschedule", "periodictaskchanged"):  # fmt: skip
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS celery_{table}")
    sqlalchemy_databases.empty(url)


class Rows:
    """sqlalchemy-celery-beat's rows, edited as a project edits them: through its models,
    whose events bump its change table."""

    def __init__(self, url: str) -> None:
        self.engine = engine_for(url).execution_options(
            schema_translate_map={"celery_schema": None}
        )
        PeriodicTask.metadata.create_all(self.engine)

    def add(self, name: str, schedule: Any, **fields: Any) -> None:
        with Session(self.engine) as session:
            session.add(schedule)
            session.flush()
            row = PeriodicTask(name=name, task="record", args=f'["{name}"]', **fields)
            row.schedule_model = schedule
            session.add(row)
            session.commit()

    def edit(self, model: type[Any], where: Any, **fields: Any) -> None:
        with Session(self.engine) as session:
            for row in session.scalars(sa.select(model).where(where)):
                for name, value in fields.items():
                    setattr(row, name, value)
            session.commit()

    def task(self, name: str) -> Any:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalars(sa.select(PeriodicTask).where(PeriodicTask.name == name)).one()


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule(every=seconds, period="seconds")


def slots(rows: list[dict[str, Any]], entry: str) -> Counter[int]:
    return Counter(slot_ms(r["slot"]) for r in rows if r["entry"] == entry)


def within(counts: Counter[int], start: float, end: float) -> list[int]:
    return sorted(s for s in counts if start * 1000 < s <= end * 1000)


def missing(counts: Counter[int], expected: set[int]) -> list[int]:
    return sorted(expected - set(counts))


def changes_seen(log: str) -> list[float]:
    """When a replica logged that it followed a schedule change (epoch seconds)."""
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
                        r"singleton beat: schedule changed", log, flags=re.MULTILINE)  # fmt: skip
    return [
        dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp() for s in stamps
    ]


def seen_within(seen: list[float], edited: float) -> bool:
    return any(edited - 0.5 <= t <= edited + PICKUP for t in seen)


def test_rows_edited_while_three_replicas_run_are_followed_within_2_s_and_counted_once(  # noqa: PLR0915  (one scenario, told in order)
    postgresql: str, tmp_path: Path
) -> None:
    rows = Rows(postgresql)
    hour = dt.datetime.now(ZoneInfo(NEW_YORK)).hour
    rows.add("tick", every(1))
    rows.add("cron", CrontabSchedule(minute="*", hour=str((hour + 6) % 24), timezone=NEW_YORK))
    with sqlalchemy_beat_cluster(tmp_path, postgresql, {}, **SETTINGS) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2", "r3")]
        wait_for(lambda: len(cluster.executions()) >= 2, 40, "first executions")
        start = time.time()
        time.sleep(2)
        # the crontab now matches every minute of this hour and the next, in New York only
        rows.edit(CrontabSchedule, CrontabSchedule.minute == "*",
                  hour=f"{hour},{(hour + 1) % 24}")  # fmt: skip
        cron_changed = time.time()
        time.sleep(2)
        rows.add("added", every(2))
        added_at = time.time()
        time.sleep(3)
        cluster.kill(replicas[0])
        rows.add("once", every(1), one_off=True)
        at = dt.datetime.fromtimestamp(round(time.time()) + 4, dt.timezone.utc)
        rows.add("clocked", ClockedSchedule(clocked_time=at), one_off=True)
        created = time.time()
        time.sleep(3)
        rows.edit(PeriodicTask, PeriodicTask.name == "tick", enabled=False)
        off = time.time()
        time.sleep(4)
        rows.edit(PeriodicTask, PeriodicTask.name == "tick", enabled=True)
        on = time.time()
        replicas.append(cluster.start_replica("r4"))
        time.sleep(max(0.0, cron_changed + 63 - time.time()))
        for replica in replicas[1:]:
            replica.popen.terminate()
            replica.popen.wait(10)
        end = time.time()
        time.sleep(2)  # the last messages reach the worker
        executed = cluster.executions()
        logs = {replica.name: replica.text() for replica in replicas[1:3]}

    for name, log in logs.items():  # the two replicas that ran through every edit
        seen = changes_seen(log)
        late = [t for t in (cron_changed, added_at, created, off, on) if not seen_within(seen, t)]
        assert late == [], f"{name} did not follow the edits at {late} within {PICKUP} s"
    counts = {name: slots(executed, name) for name in ("tick", "cron", "added", "once", "clocked")}
    assert {n: [s for s, k in c.items() if k > 1] for n, c in counts.items()} == {
        n: [] for n in counts
    }, "no slot executed twice"
    last = end - 1.5
    assert missing(counts["tick"], interval_slots(1, start, off)) == []
    assert within(counts["tick"], off + PICKUP, on) == []
    assert missing(counts["tick"], interval_slots(1, on + PICKUP, last)) == []
    assert within(counts["added"], 0, added_at) == []
    assert missing(counts["added"], interval_slots(2, added_at + PICKUP, last)) == []
    minutes = within(counts["cron"], cron_changed + PICKUP, last)
    assert within(counts["cron"], 0, cron_changed) == []
    assert missing(counts["cron"], interval_slots(60, cron_changed + PICKUP, last)) == []
    assert len(minutes) >= 1 and all(s % 60_000 == 0 for s in minutes)
    assert sum(counts["once"].values()) == 1
    assert list(counts["clocked"]) == [round(at.timestamp() * 1000)]
    for name in ("once", "clocked"):
        row = rows.task(name)
        assert (row.enabled, row.total_run_count) == (False, 1), name
        assert row.last_run_at is not None
    for name in ("tick", "added", "cron"):
        row = rows.task(name)
        assert row.total_run_count == sum(counts[name].values()), name
        newest = max(counts[name]) / 1000
        assert 0 <= row.last_run_at.timestamp() - newest < 1.5, name


def duplicates(cluster: SqlBeatCluster, scheduler: str, seconds: float) -> tuple[int, int]:
    """Three replicas of ``scheduler`` on one row every second: (executions, slots)."""
    cluster.start_worker()
    for name in ("r1", "r2", "r3"):
        cluster.start_replica(name, scheduler=scheduler)
    wait_for(lambda: len(cluster.executions()) >= 3, 40, "first executions")
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    ran = [r for r in cluster.executions() if start < r["at"] <= end]
    return len(ran), round(end - start)


def test_sqlalchemy_celery_beats_own_scheduler_on_three_replicas_runs_every_slot_about_three_times(
    postgresql: str, tmp_path: Path
) -> None:
    rows = Rows(postgresql)
    rows.add("tick", every(1))
    (tmp_path / "its").mkdir()
    with sqlalchemy_beat_cluster(tmp_path / "its", postgresql, {}, **SETTINGS) as cluster:
        theirs, seconds = duplicates(cluster, ITS_SCHEDULER, 10)
    (tmp_path / "ours").mkdir()
    with sqlalchemy_beat_cluster(tmp_path / "ours", postgresql, {}, **SETTINGS) as cluster:
        ours, ours_seconds = duplicates(cluster, "singleton", 10)
    assert theirs >= 2.5 * seconds, f"{theirs} executions in {seconds} s: each replica sends"
    assert ours_seconds - 1 <= ours <= ours_seconds + 1, f"{ours} executions in {ours_seconds} s"

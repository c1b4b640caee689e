"""The runtime schedule API and CLI with three replicas and no Django: entries added,
paused, resumed, run now and removed while beat runs, every change followed within 2 s
by every replica, every slot executed once, a run now once however many callers race."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat import schedule
from celery_singleton_beat.testing import Process, RedisServer, wait_for
from tests.support.clusters import ROOT, BeatCluster, beat_cluster, interval_slots, slot_ms

pytestmark = pytest.mark.slow

SETTINGS = {
    "singleton_beat_schedule_source": ["beat_schedule", "runtime"],
    "singleton_beat_claim_ttl": 1.0,
}
#: A change is acted on by every replica within this many seconds.
PICKUP = 2.0


def api_app(masters: list[RedisServer]) -> Celery:
    app = Celery("api", broker="memory://", set_as_current=False)
    app.conf.singleton_beat_redis_urls = ",".join(m.url for m in masters)

    @app.task(name="record", shared=False)
    def record(entry: str) -> None:
        """Run by the test's worker (``tests.beat.app``); known here by its name, as in a
        project whose producers import the task modules too."""

    return app


def cli(cluster: BeatCluster, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.beat.app", "singleton-beat", "schedule",
         *args],
        cwd=ROOT, env=cluster.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def slots(rows: list[dict[str, Any]], entry: str) -> Counter[int]:
    return Counter(slot_ms(r["slot"]) for r in rows if r["beat_entry"] == entry)


def within(counts: Counter[int], start: float, end: float) -> list[int]:
    return sorted(s for s in counts if start * 1000 < s <= end * 1000)


def missing(counts: Counter[int], expected: set[int]) -> list[int]:
    return sorted(expected - set(counts))


def loaded(replica: Process) -> bool:
    """Whether a replica has loaded its schedule (it follows changes from then on)."""
    return "entries loaded" in replica.text()


def changes_seen(log: str) -> list[float]:
    """When a replica logged that it followed a schedule change (epoch seconds)."""
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
                        r"singleton beat: schedule changed", log, flags=re.MULTILINE)  # fmt: skip
    return [
        dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp() for s in stamps
    ]


def race(app: Celery, name: str) -> list[str]:
    """Two callers ask for a run now of ``name`` at the same moment."""
    ids: list[str] = []
    go = threading.Barrier(2)

    def click() -> None:
        go.wait()
        ids.append(schedule.run_now(app, name, by="test"))

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return ids


def test_runtime_entries_are_followed_by_three_replicas_and_a_run_now_runs_once(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    app = api_app(three_masters)
    with beat_cluster(tmp_path, three_masters, {}, **SETTINGS) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2", "r3")]
        wait_for(lambda: all(loaded(r) for r in replicas), 30, "the replicas running")
        schedule.add(app, "a", "record", every=1, args=["a"])
        added_a = time.time()
        wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
        before_b = time.time()
        cli(cluster, "add", "b", "record", "--every", "2", "--args", '["b"]')
        added_b = time.time()
        time.sleep(3)
        schedule.pause(app, "a")
        paused = time.time()
        time.sleep(4)
        schedule.resume(app, "a")
        resumed = time.time()
        first_ids = race(app, "b")
        cluster.kill(replicas[0])
        time.sleep(4)
        second = cli(cluster, "run-now", "b").split(": ")[-1].strip()
        listed = cli(cluster, "list")
        time.sleep(3)
        schedule.remove(app, "a")
        removed = time.time()
        time.sleep(4)
        end = time.time() - 1.5
        rows = cluster.executions()

    for replica in replicas[1:]:
        seen = changes_seen(replica.text())
        # (earliest, latest) moment of each edit made once the replicas ran (the CLI's
        # somewhere while it ran)
        edits = [(t - 0.5, t) for t in (paused, resumed, removed)]
        edits.append((before_b, added_b))
        late = [e for e in edits if not any(e[0] <= s <= e[1] + PICKUP for s in seen)]
        assert late == [], f"{replica.name} did not follow the edits at {late} within {PICKUP} s"
    a, b = slots(rows, "a"), slots(rows, "b")
    assert ([s for s, n in a.items() if n > 1], [s for s, n in b.items() if n > 1]) == ([], [])
    assert within(a, 0, added_a) == []
    assert missing(a, interval_slots(1, added_a + PICKUP, paused)) == []
    assert within(a, paused + PICKUP, resumed - 1) == []
    assert missing(a, interval_slots(1, resumed + PICKUP, removed)) == []
    assert within(a, removed + PICKUP, end) == []
    assert within(b, 0, before_b) == []
    assert missing(b, interval_slots(2, added_b + PICKUP, end)) == []
    assert len(first_ids) == 2 and first_ids[0] == first_ids[1] != second
    runs = Counter(r["beat_entry"] for r in rows if "@run-now:" in (r["beat_entry"] or ""))
    assert runs == {f"b@run-now:{first_ids[0]}": 1, f"b@run-now:{second}": 1}
    assert [r["entry"] for r in rows if r["beat_entry"] == f"b@run-now:{second}"] == ["b"]
    assert "b: record every 2.0s" in listed


def test_a_run_now_seen_after_its_time_by_every_replica_still_runs_once(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """Replicas whose clocks run 3 s ahead find the run's time passed when they first see
    it; it is sent anyway, once (the misfire policy allows 300 s)."""
    app = api_app(three_masters)
    with beat_cluster(tmp_path, three_masters, {}, **SETTINGS) as cluster:
        cluster.start_worker()
        skewed = [cluster.start_replica(name, TEST_CLOCK_SKEW="3") for name in ("r1", "r2")]
        wait_for(lambda: all(loaded(r) for r in skewed), 30, "the replicas running")
        run_id = schedule.run_now(app, "late", message={"task": "record", "args": ["late"]})
        wait_for(cluster.executions, 15, "the run")
        time.sleep(3)
        rows = cluster.executions()
    assert [r["beat_entry"] for r in rows] == [f"late@run-now:{run_id}"]


def test_a_run_now_asked_while_no_replica_ran_is_sent_once_by_replicas_starting_after_its_time(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """Replicas that first see a run at start-up, its time passed, still send it, once."""
    app = api_app(three_masters)
    with beat_cluster(tmp_path, three_masters, {}, **SETTINGS) as cluster:
        cluster.start_worker()
        run_id = schedule.run_now(app, "early", message={"task": "record", "args": ["early"]})
        time.sleep(3)  # the run's time (1.5 s after asking) passes with no replica running
        for name in ("r1", "r2"):
            cluster.start_replica(name)
        wait_for(cluster.executions, 20, "the run")
        time.sleep(3)
        rows = cluster.executions()
    assert [r["beat_entry"] for r in rows] == [f"early@run-now:{run_id}"]

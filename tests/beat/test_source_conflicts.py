"""Schedule data that beat cannot take as it is never stops a replica. An entry name given
by two sources while replicas run: the copy of the source listed later is left out,
every other change is still followed, a replica started then starts, and the log (once),
``/readyz``, ``/metrics`` and ``check`` say so. An entry that cannot be read: left out."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from celery_singleton_beat.testing import Process, RedisServer, free_port, wait_for
from tests.support.clusters import ROOT, BeatCluster, beat_cluster, executed_slots, interval_slots

pytestmark = pytest.mark.slow

SOURCES = {
    "singleton_beat_schedule_source": ["beat_schedule", "runtime", "tests.beat.app.RedisSource"],
    "singleton_beat_claim_ttl": 1.0,
}
CONFLICT = (
    "entry 'tick' is given by both 'beat_schedule' and 'test-redis' "
    "(singleton_beat_schedule_source): beat leaves the copy of 'test-redis' out, "
    "'beat_schedule' is listed first; rename or remove one of them"
)
GONE = "singleton beat: entry 'tick' is no longer given by both 'beat_schedule' and 'test-redis'"
#: A change is acted on by every replica within this many seconds.
PICKUP = 2.0


def cli(cluster: BeatCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.beat.app", "singleton-beat", *args],
        cwd=ROOT, env=cluster.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def get(port: int, path: str) -> tuple[int, str]:
    """The status and body of ``GET path`` (a 503 is an answer, not an error; 0 while
    nothing listens yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""


def lines(replica: Process, level: str, text: str) -> list[str]:
    """The lines of ``replica``'s log at ``level`` that hold ``text``."""
    return [
        line
        for line in replica.text().splitlines()
        if f"{level}/MainProcess]" in line and text in line
    ]


def test_a_name_in_two_sources_leaves_the_later_copy_out_and_holds_up_nothing_else(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    port = free_port()
    with beat_cluster(tmp_path, three_masters, {"tick": {"every": 1}}, **SOURCES) as cluster:
        cluster.start_worker()
        r1 = cluster.start_replica("r1")
        wait_for(lambda: "entries loaded" in r1.text(), 30, "r1 running")
        conflict = cluster.edit_source({"tick": {"every": 4}})
        added = cli(
            cluster, "schedule", "add", "ok1", "record", "--every", "1", "--args", '["ok1"]'
        )
        assert added.returncode == 0, added.stderr
        wait_for(lambda: executed_slots(cluster.executions(), "ok1"), 10, "ok1 to run")
        r2 = cluster.start_replica("r2", settings={"singleton_beat_health_port": port})
        wait_for(lambda: "entries loaded" in r2.text() or not r2.alive(), 30, "r2 running")
        assert r2.alive(), r2.text()
        wait_for(lambda: get(port, "/readyz")[0] == 200, 10, "r2 ready")
        ready = get(port, "/readyz")
        metrics = get(port, "/metrics")[1]
        check = cli(cluster, "check")
        cluster.edit_source({"other": {"every": 4}})
        wait_for(lambda: all(lines(r, "WARNING", GONE) for r in (r1, r2)), 10, "the conflict gone")
        end = time.time() - 1.5
        rows = cluster.executions()
        after = (get(port, "/readyz")[1], get(port, "/metrics")[1])

    tick = executed_slots(rows, "tick")
    assert sorted(s for s, n in tick.items() if n > 1) == []
    missing = interval_slots(1, conflict + PICKUP, end) - set(tick)
    assert sorted(missing) == [], "the copy of beat_schedule (every second) keeps running"
    assert ready[1].startswith("ok: ")
    assert ready[1].endswith(f"; 1 entry left out: {CONFLICT}\n")
    assert "celery_singleton_beat_entry_conflicts 1.0" in metrics.splitlines()
    assert check.returncode == 1, check.stdout
    assert f"ERROR {CONFLICT}" in check.stdout.splitlines()
    for replica in (r1, r2):
        assert len(lines(replica, "ERROR", f"singleton beat: {CONFLICT}")) == 1, replica.name
        assert len(lines(replica, "WARNING", GONE)) == 1, replica.name
    assert after[0].startswith("ok: ") and "left out" not in after[0]
    assert "celery_singleton_beat_entry_conflicts 0.0" in after[1].splitlines()


def test_a_replica_starts_beside_an_entry_of_a_source_that_cannot_be_read_and_leaves_it_out(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    settings = {"singleton_beat_schedule_source": ["beat_schedule", "tests.beat.app.RedisSource"]}
    with beat_cluster(tmp_path, three_masters, {"tick": {"every": 1}}, **settings) as cluster:
        cluster.edit_source({"bad": {"every": 1, "options": {"singleton_beat": {"misfire": "?"}}}})
        cluster.start_worker()
        replica = cluster.start_replica("r1")
        wait_for(
            lambda: executed_slots(cluster.executions(), "tick") or not replica.alive(), 30, "tick"
        )
        assert replica.alive(), replica.text()
    assert lines(replica, "ERROR", "singleton beat: entry 'bad'") == [
        line for line in replica.text().splitlines() if "ERROR/MainProcess]" in line
    ]
    (refused,) = lines(replica, "ERROR", "singleton beat: entry 'bad'")
    assert refused.endswith(
        "singleton beat: entry 'bad' of the schedule source 'test-redis' is refused, left out: "
        "beat_schedule['bad']['options']['singleton_beat']['misfire'] = '?' is not valid: "
        "'coalesce' (default) or 'skip'."
    )

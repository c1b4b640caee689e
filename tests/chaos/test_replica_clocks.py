"""Replica liveness is measured on the Redis masters' clocks, not on the replicas': three
beat replicas whose wall clocks are 7 s behind, right and 7 s ahead all count as live,
for each other, for the ``replicas`` gauge and for the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from celery_singleton_beat.testing import RedisServer, wait_for
from tests.support.clusters import BeatCluster, beat_cluster

pytestmark = pytest.mark.slow

SKEWS = {"behind": -7.0, "right": 0.0, "ahead": 7.0}
WINDOW = 10.0


def cli_status(cluster: BeatCluster) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.beat.app", "singleton-beat", "status",
         "--json"],
        cwd=cluster.workdir, env=cluster.env(), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def replica_clock_offset(masters: list[RedisServer], replica: str) -> float:
    """How far the replica's scheduler clock is from the master's (this host's): its last
    heartbeat's own time against the master's time of that heartbeat (its expiry score
    less its TTL)."""
    with masters[0].client().pipeline(transaction=True) as pipe:
        pipe.get(f"singleton-beat:replica:{replica}")
        pipe.zscore("singleton-beat:replicas", replica)
        raw, score = pipe.execute()
    assert raw is not None and score is not None, f"no heartbeat from {replica}"
    info = json.loads(raw)
    # the score is when the heartbeat expires on the master's clock, ttl after it was written
    return float(info["last_tick"]) - (float(score) - float(info["ttl"]))


def test_replicas_with_clocks_7s_behind_and_7s_ahead_are_counted_by_every_replica_and_the_cli(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    with beat_cluster(tmp_path, three_masters, {"two": {"every": 2}}) as cluster:
        ids = {
            name: cluster.replica_id(
                cluster.start_replica(name, TEST_CLOCK_SKEW=str(skew), TEST_RECORD_REPLICAS="1")
            )
            for name, skew in SKEWS.items()
        }

        def all_see_three() -> bool:
            newest = {r["replica"]: r["replicas"] for r in cluster.replicas_seen()}
            return all(newest.get(replica) == 3 for replica in ids.values())

        wait_for(all_see_three, 40, "every replica counting 3 replicas")
        offsets = {name: replica_clock_offset(three_masters, ids[name]) for name in SKEWS}
        start = time.time()
        time.sleep(WINDOW)
        end = time.time()
        status = cli_status(cluster)
        seen = [r for r in cluster.replicas_seen() if start <= r["at"] <= end]
    for name, skew in SKEWS.items():
        assert abs(offsets[name] - skew) < 0.5, f"{name}'s clock is off by {offsets[name]:.2f}s"
    counts: dict[str, list[int]] = defaultdict(list)
    for row in seen:
        counts[row["replica"]].append(row["replicas"])
    for name, replica in ids.items():
        # a heartbeat every 1-2 s (the loop heartbeats on its first tick after 1 s)
        assert len(counts[replica]) >= WINDOW / 2 - 1, f"{name}: {counts[replica]}"
        assert set(counts[replica]) == {3}, f"{name} counted {counts[replica]}"
    assert status.returncode == 0, status.stderr
    listed = json.loads(status.stdout)["replicas"]
    assert sorted(f"{r['host']}:{r['pid']}" for r in listed) == sorted(ids.values())
    assert all(0 <= r["seen_ago"] < 2 for r in listed), [r["seen_ago"] for r in listed]

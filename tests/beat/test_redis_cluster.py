"""Beat replicas on a Redis Cluster (3 primaries, a replica each) through a primary's
failover: real ``celery beat`` processes, a real worker, real ``redis-server`` nodes."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from celery_singleton_beat.core.schema import Keys
from celery_singleton_beat.testing import RedisClusterServers, wait_for
from tests.support.clusters import FAST, beat_cluster, executed_slots, interval_slots

pytestmark = pytest.mark.slow


def entry_key(entry: str) -> str:
    """An entry's progress key on a Redis Cluster (hash-tagged)."""
    return Keys(hash_tags=True).entry(entry)


def entry_counts(cluster: RedisClusterServers, entry: str) -> dict[str, int]:
    values = cluster.client().hgetall(entry_key(entry))
    return {k.decode(): int(v) for k, v in values.items()}


def test_three_replicas_run_every_slot_once_through_a_primary_failover(
    sharded_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    schedule = {"one": {"every": 1}, "two": {"every": 2}}
    with beat_cluster(tmp_path, [sharded_cluster], schedule, **FAST) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2", "r3")]
        wait_for(lambda: len(cluster.executions()) >= 4, 30, "first executions")
        start = time.time()
        time.sleep(3)
        before = {e: entry_counts(sharded_cluster, e).get("skipped", 0) for e in schedule}
        victim = sharded_cluster.primary_of(entry_key("one"))
        killed = time.time()
        failover = sharded_cluster.kill_primary(victim)
        time.sleep(12)
        end = time.time() - 1.5
        rows = cluster.executions()
        skipped = {
            e: entry_counts(sharded_cluster, e).get("skipped", 0) - before[e] for e in schedule
        }
        alive = [r.name for r in replicas if r.alive()]
        logs = [r.text() for r in replicas]
    ids = Counter(r["task_id"] for r in rows)
    assert [i for i, n in ids.items() if n > 1] == [], "no task id executed twice"
    for entry, every in (("one", 1), ("two", 2)):
        counts = executed_slots(rows, entry)
        assert [s for s, n in counts.items() if n > 1] == [], f"{entry}: no slot executed twice"
        expected = interval_slots(every, start, end)
        missing = sorted(s for s in expected if counts[s] == 0)
        assert len(missing) == skipped[entry], f"{entry}: each slot not run is counted missed"
    assert alive == ["r1", "r2", "r3"], "no beat process exits"
    for log in logs:  # one line per state change
        downs = log.count("the Redis Cluster does not answer (or is down)")
        assert downs == log.count("the Redis Cluster answers again") <= 1
    assert "Traceback" not in "".join(logs)
    first = min(r["at"] for r in rows if r["entry"] == "one" and r["at"] > killed)
    assert first - killed <= failover + 2, (
        f"first run after the kill {first - killed:.2f}s, failover {failover:.2f}s"
    )

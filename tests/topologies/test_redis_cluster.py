"""Beat replicas and a singleton task on a Redis Cluster (3 primaries, a replica each)
through the failover of a primary: real ``celery beat`` processes, real workers, real
``redis-server`` nodes. Counted as on Sentinel: no task id or slot executed twice, every
slot executed or counted as missed, no beat process exits, the first publish after the
kill within the failover time plus two seconds; one execution of a singleton key at a
time."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest

from celery_singleton_beat.core.schema import Keys
from celery_singleton_beat.testing import RedisClusterServers, wait_for
from tests.support.clusters import FAST, beat_cluster, slot_accounting, task_cluster

pytestmark = pytest.mark.slow

SCHEDULE = {"one": {"every": 1}, "two": {"every": 2}}


def test_three_replicas_run_every_slot_once_through_a_primary_failover(
    sharded_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    """The primary holding entry ``one``'s keys is killed and its replica promoted; a
    fourth beat replica starts during the failover.

    The kill lands half a second after a slot, when no publish is on its way: a replica
    killed between publishing a slot and marking it done (here: its primary) leaves a
    claim that another replica takes over, sending the slot again with the same task id,
    and a plain task runs that copy unless its worker drops it; that case has its own
    tests (a replica dying between publish and done)."""
    keys = Keys(hash_tags=True)
    with beat_cluster(tmp_path, [sharded_cluster], SCHEDULE, **FAST) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2", "r3")]
        wait_for(lambda: len(cluster.executions()) >= 4, 30, "first executions")
        start = time.time()
        time.sleep(4)
        victim = sharded_cluster.primary_of(keys.entry("one"))
        time.sleep(1.5 - time.time() % 1)  # half a second after a slot
        killed = time.time()
        replicas.append(cluster.start_replica("r4"))
        failover = sharded_cluster.kill_primary(victim)
        time.sleep(max(0.0, killed + 14 - time.time()))
        end = time.time()
        time.sleep(2)  # messages in flight reach the worker
        rows = cluster.executions()
        faults = slot_accounting(rows, [sharded_cluster], SCHEDULE, (start, end), keys)
        exited = [r.name for r in replicas if not r.alive()]
        logs = [r.text() for r in replicas]
    assert (faults, exited) == ([], [])
    assert sum(1 for r in rows if start <= r["at"] <= killed) >= 5, "beat ran before the kill"
    first = min(r["at"] for r in rows if r["entry"] == "one" and r["at"] > killed)
    assert first - killed <= failover + 2, (first - killed, failover)
    for log in logs:  # one line per state change
        downs = log.count("the Redis Cluster does not answer (or is down)")
        assert downs == log.count("the Redis Cluster answers again") <= 1
    assert "Traceback" not in "".join(logs)


def test_a_singleton_task_runs_one_at_a_time_through_a_primary_failover(
    sharded_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    with task_cluster(tmp_path, [sharded_cluster]) as cluster:
        settings = json.dumps({"singleton_beat_task_ttl": 3.0})
        cluster.start_worker("w1", concurrency=4, TEST_SETTINGS=settings)
        cluster.start_worker("w2", concurrency=4, TEST_SETTINGS=settings)
        stop = threading.Event()

        def send() -> None:
            while not stop.is_set():
                cluster.send("slow", 0.5)
                time.sleep(0.1)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            wait_for(lambda: cluster.events("RunStarted", "slow"), 30, "the first run")
            name = cluster.events("RunStarted", "slow")[0]["key"]
            victim = sharded_cluster.primary_of(Keys(hash_tags=True).lock(name))
            wait_for(lambda: len(cluster.runs("slow")) >= 2, 30, "two runs before the kill")
            killed = time.time()
            failover = sharded_cluster.kill_primary(victim)
            time.sleep(8)
        finally:
            stop.set()
            sender.join()
        time.sleep(1.5)  # the last runs finish
        runs = sorted((r["start"], r["end"]) for r in cluster.runs("slow"))
    overlapping = [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1]]
    assert overlapping == [], "one execution at a time"
    assert any(start < killed for start, _ in runs)
    assert any(start > killed + failover for start, _ in runs), "runs go on after the failover"

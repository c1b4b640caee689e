"""SingletonTask on a Redis Cluster (3 primaries, a replica each) through the failover of
the primary that holds its lock: real workers, real ``redis-server`` nodes."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest

from celery_singleton_beat.core.schema import Keys
from celery_singleton_beat.testing import RedisClusterServers, wait_for
from tests.support.clusters import task_cluster

pytestmark = pytest.mark.slow


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

"""``celery worker -B --scheduler singleton`` on every replica: each worker's embedded beat
is one replica, and losing one (its worker and its beat together, as a host or container
goes) neither repeats nor misses a slot."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from celery_singleton_beat.testing import RedisServer, wait_for
from tests.support.clusters import beat_cluster, check_exactly_once

pytestmark = pytest.mark.slow

#: The app's own setting names Celery's default scheduler: ``--scheduler singleton`` alone
#: makes each embedded beat a replica.
SETTINGS = {"singleton_beat_claim_ttl": 1.0, "beat_scheduler": "celery.beat:PersistentScheduler"}


def test_three_workers_with_embedded_beat_one_killed_run_every_slot_exactly_once(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    with beat_cluster(tmp_path, three_masters, {"tick": {"every": 1}}, **SETTINGS) as cluster:
        workers = [cluster.start_worker(name, beat="singleton") for name in ("w1", "w2", "w3")]
        wait_for(lambda: len(cluster.executions()) >= 3, 30, "first executions")
        start = time.time()
        time.sleep(8)
        sender = cluster.executions()[-1]["replica"]  # host:pid of an embedded beat
        group = os.getpgid(int(sender.rpartition(":")[2]))
        victim = next(w for w in workers if w.popen.pid == group)
        cluster.kill(victim)  # the worker and its embedded beat, mid-run
        killed = time.time()
        time.sleep(10)
        end = time.time() - 1.5
        wait_for(lambda: max(r["at"] for r in cluster.executions()) > end + 1, 10, "the last slots")
        rows = cluster.executions()
    check_exactly_once(rows, "tick", 1, start, end)
    assert [n for n in Counter(r["task_id"] for r in rows).values() if n > 1] == []
    assert sender not in {r["replica"] for r in rows if r["at"] > killed + 2}, "it was killed"

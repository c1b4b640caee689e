"""A singleton task on one primary with a replica keeps one execution at a time through a
failover that loses writes, behind Sentinel and behind an endpoint that moves."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from celery_singleton_beat.testing import SentinelGroup, TcpProxy, sentinel_group, wait_for
from tests.support.clusters import task_cluster

pytestmark = pytest.mark.slow


def one_at_a_time(tmp_path: Path, group: SentinelGroup, endpoint: Any, **settings: Any) -> None:
    """The replica stops replicating; a long run is asked for; the primary is killed and
    a replica promoted; copies are sent every half second after the failover. Runs never
    overlap, and copies run after the failover."""
    with task_cluster(tmp_path, [endpoint]) as cluster:
        cluster.start_worker(TEST_SETTINGS=json.dumps(settings))
        cluster.send("slow", 0.1)
        wait_for(lambda: cluster.runs("slow"), 30, "a first run")
        group.replicas()[0].client().execute_command("REPLICAOF", "NO", "ONE")
        time.sleep(0.5)
        cluster.send("slow", 6.0, task_id="long")
        time.sleep(1.5)
        primary = group.primary()
        primary.kill()
        promoted = group.wait_for_failover(primary)
        if isinstance(endpoint, TcpProxy):
            endpoint.retarget(promoted.port)
        moved = time.time()
        while time.time() < moved + 10:
            cluster.send("slow", 1.0)
            time.sleep(0.5)
        time.sleep(2)
        runs = sorted(cluster.runs("slow")[1:], key=lambda r: r["start"])
    overlaps = [
        (a["task_id"], b["task_id"]) for a, b in itertools.pairwise(runs) if b["start"] < a["end"]
    ]
    assert overlaps == []
    assert [r["task_id"] for r in runs].count("long") <= 1
    assert any(r["start"] > moved for r in runs), "copies run after the failover"


def test_a_singleton_task_on_sentinel_runs_one_at_a_time_through_a_failover(
    tmp_path: Path,
) -> None:
    with sentinel_group() as group:
        options = {"master_name": group.master_name}
        one_at_a_time(tmp_path, group, group, singleton_beat_redis_transport_options=options)


def test_a_singleton_task_behind_a_moving_endpoint_runs_one_at_a_time_through_a_failover(
    tmp_path: Path,
) -> None:
    with sentinel_group() as group:
        proxy = TcpProxy(group.primary().port)
        try:
            one_at_a_time(tmp_path, group, proxy)
        finally:
            proxy.close()

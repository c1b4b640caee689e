"""Three beat replicas on a three-member etcd cluster: the replica that sent last killed
and another paused past its claims' TTL cost nothing; the leader member lost costs
nothing; two members lost publish nothing (``/readyz`` 503, one log line each way), and
the replicas carry on by themselves when a member returns. Each slot is executed once, or
counted as missed. A singleton task on etcd runs one at a time, and a killed worker's lock
ends with its lease."""

from __future__ import annotations

import itertools
import json
import signal
import time
from pathlib import Path

import pytest

from celery_singleton_beat.connections.etcd import Etcd
from celery_singleton_beat.locks.etcd import EtcdLock
from celery_singleton_beat.stores.etcd import EtcdSlotStore
from celery_singleton_beat.testing import Process, free_port, http_status, wait_for
from celery_singleton_beat.testing.etcd import EtcdCluster
from tests.support.clusters import BeatCluster, beat_cluster, executed_slots, task_cluster

pytestmark = pytest.mark.slow

EVERY_SECOND = {"one": {"every": 1}}


def etcd_settings(members: EtcdCluster) -> dict[str, object]:
    return {
        "singleton_beat_store": "etcd",
        "singleton_beat_redis_urls": None,
        "singleton_beat_etcd_endpoints": members.endpoints,
        "singleton_beat_etcd_timeout": 0.5,
        "singleton_beat_claim_ttl": 2.0,
        "singleton_beat_lease_ttl": 4.0,
        # the worker drops a slot sent twice on the same cluster's "ran" marks
        "singleton_beat_task_backend": "celery_singleton_beat.locks.etcd.from_app",
    }


def counts(members: EtcdCluster, entry: str) -> dict[str, int]:
    store = EtcdSlotStore(Etcd(members.endpoints))
    try:
        return store.entry_counts(entry)
    finally:
        store.close()


def kill_and_pause(cluster: BeatCluster, replicas: list[Process]) -> None:
    """SIGKILL the replica that sent last and start it again; SIGSTOP another past its
    claims' TTL, then SIGCONT."""
    last = cluster.replica_of(cluster.executions()[-1]["replica"])
    replicas[replicas.index(last)] = cluster.restart(last)
    time.sleep(3)
    replicas[2].signal(signal.SIGSTOP)
    time.sleep(3 * 2.0)
    replicas[2].signal(signal.SIGCONT)
    time.sleep(3)


def test_replicas_and_members_lost_run_each_slot_once_and_two_members_lost_publish_nothing(
    etcd_three: EtcdCluster, tmp_path: Path
) -> None:
    port = free_port()
    with beat_cluster(tmp_path, [], EVERY_SECOND, **etcd_settings(etcd_three)) as cluster:
        cluster.start_worker()
        replicas = [
            cluster.start_replica("r1", settings={"singleton_beat_health_port": port}),
            cluster.start_replica("r2"),
            cluster.start_replica("r3"),
        ]
        wait_for(lambda: len(cluster.executions()) >= 3, 60, "first executions")
        kill_and_pause(cluster, replicas)
        member_lost = time.time()
        first = etcd_three.leader()  # the loss that costs an election
        first.kill()
        time.sleep(6)
        one_lost = [r["at"] for r in cluster.executions()]
        second = next(m for m in etcd_three.members if m is not first)
        second.kill()
        no_quorum = time.time()
        time.sleep(8)
        not_ready = http_status(port, "/readyz")
        restarting = time.time()  # the majority is back somewhere until restart() returns
        etcd_three.restart(second)
        back = time.time()
        wait_for(lambda: cluster.executions()[-1]["at"] > back, 60, "sending again with a quorum")
        time.sleep(3)
        ready = http_status(port, "/readyz")
        for replica in replicas:
            cluster.kill(replica)
        state = counts(etcd_three, "one")
        ran = lambda: len(cluster.executions())  # noqa: E731
        wait_for(lambda: ran() >= state["dispatched"], 30, f"{state} executed: {ran()}")
        time.sleep(1)
        rows = cluster.executions()
        worker = next(p for p in cluster.processes if p.name == "worker").text()
        logs = [p.text() for p in replicas]
        exited = [p.name for p in replicas if p.popen.returncode not in (-9, None)]
    executed = executed_slots(rows, "one")
    assert [s for s, n in executed.items() if n > 1] == [], "no slot executed twice"
    assert len(rows) == state["dispatched"], worker[-3000:]
    gaps = [b - a for a, b in itertools.pairwise(one_lost) if a > member_lost]
    assert max(gaps) < 2.5, f"the leader member lost: a slot every second still ({gaps})"
    ran_during = [r for r in rows if no_quorum + 2 < r["at"] < restarting]
    assert ran_during == [], "nothing sent, nothing run without a majority"
    outage = [s for s in executed if no_quorum + 2 < s / 1000 < restarting]
    assert len(outage) <= 1, f"at most the latest missed slot, coalesced, once back: {outage}"
    assert (not_ready, ready, exited) == (503, 200, [])
    handled = (state["last"] - min(executed)) // 1000 + 1
    assert state["dispatched"] + state["skipped"] == handled, (state, min(executed), handled)
    assert state["skipped"] >= 4, "the slots of the outage are counted as missed"
    for log in logs:
        lines = [line for line in log.splitlines() if "no etcd member" in line]
        assert len(lines) == 1, lines
        assert log.count("an etcd member with a majority behind it answers again") == 1, log[-3000:]


def test_a_singleton_task_on_etcd_runs_one_at_a_time_and_a_killed_workers_lock_ends_with_its_lease(
    shared_etcd: EtcdCluster, tmp_path: Path
) -> None:
    settings = {
        "singleton_beat_task_backend": "celery_singleton_beat.locks.etcd.from_app",
        "singleton_beat_etcd_endpoints": shared_etcd.endpoints,
        "singleton_beat_redis_urls": None,
    }
    lock = EtcdLock(Etcd(shared_etcd.endpoints))
    with task_cluster(tmp_path, []) as cluster:
        worker = cluster.start_worker("w1", TEST_SETTINGS=json.dumps(settings))
        cluster.send("until_killed", 60)
        wait_for(lambda: cluster.events("RunStarted", "until_killed"), 20, "the run to start")
        key = cluster.events("RunStarted", "until_killed")[0]["key"]
        assert lock.holder(key) is not None
        cluster.kill(worker)
        killed = time.monotonic()
        wait_for(lambda: lock.holder(key) is None, 10, "the lease to end")
        freed_after = time.monotonic() - killed
        for name in ("w2", "w3"):
            cluster.start_worker(name, pool="prefork", concurrency=2,
                                 TEST_SETTINGS=json.dumps(settings))  # fmt: skip
        for _ in range(12):
            cluster.send("slow", 0.5)

        def settled() -> bool:
            return len(cluster.runs("slow")) + len(cluster.events("RunSkipped", "slow")) == 12

        wait_for(settled, 60, "12 messages to run or be skipped")
        runs = sorted((r["start"], r["end"]) for r in cluster.runs("slow"))
        skipped = cluster.events("RunSkipped", "slow")
    lock.close()
    assert freed_after <= 2.0 + 1.5, "a 2 s lock's lease ends within etcd's half second"
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(runs)), runs
    assert len(runs) >= 1
    assert len(skipped) >= 3, "four processes take messages at once: at least three skip"

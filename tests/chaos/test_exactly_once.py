"""Exactly once under failures of the services around beat: a master that restarted empty,
a broker that answers slowly, a broker that stops answering. Real masters, a real broker
behind a proxy, three beat replicas and a worker."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from celery_singleton_beat.testing import RedisServer, TcpProxy, wait_for
from tests.support.clusters import (
    BeatCluster,
    beat_cluster,
    check_every_slot_accounted,
    interval_slots,
    master_hash,
    slot_ms,
)

pytestmark = pytest.mark.slow

FAST = {"singleton_beat_claim_ttl": 1.0, "singleton_beat_lease_ttl": 3.0}
PREFIX = "singleton-beat:"


def test_a_slot_missed_while_a_master_was_emptied_is_coalesced_and_counted(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """A master that restarted empty does not vote with an invented start: a replica that
    starts after the missed slots fires the newest (coalesce) and counts the others."""
    schedule = {"four": {"every": 4}}
    with beat_cluster(tmp_path, three_masters, schedule, **FAST) as cluster:
        cluster.start_worker()
        replica = cluster.start_replica("r1")
        wait_for(lambda: len(cluster.executions()) >= 1, 30, "first execution")
        cluster.kill(replica)
        down = time.time()
        three_masters[0].restart()  # back, with no data at all
        time.sleep(10)
        while time.time() % 4 < 2 or time.time() % 4 > 2.3:  # start 2 s after a slot
            time.sleep(0.02)
        cluster.restart(replica)
        time.sleep(8)
        rows = cluster.executions()
        skipped = master_hash(three_masters, f"{PREFIX}entry:four").get("skipped", 0)
    last_before = max(slot_ms(r["slot"]) for r in rows if r["at"] <= down)
    after = sorted(slot_ms(r["slot"]) for r in rows if slot_ms(r["slot"]) > last_before)
    # the first slot sent after the outage is the newest one missed when the replica came
    # back (however long it took to start); each one after it, once, on time
    first = after[0]
    gap = list(range(last_before + 4000, first + 1, 4000))
    assert len(gap) >= 2, "slots were missed while no replica ran"
    assert after == list(range(first, after[-1] + 1, 4000)), "coalesced: no missed slot sent"
    assert skipped == len(gap) - 1, "the other missed slots are counted"


def run_through(
    cluster: BeatCluster, proxy: TcpProxy, seconds: float, heal_after: float | None
) -> tuple[float, float]:
    """Three replicas on the proxied broker for ``seconds``; returns the observed window."""
    cluster.start_worker()
    for name in ("r1", "r2", "r3"):
        cluster.start_replica(name, TEST_BROKER_URL=proxy.url)
    wait_for(lambda: len(cluster.executions()) >= 3, 60, "first executions")
    start = time.time()
    if heal_after is None:
        proxy.delay(4.0)
        time.sleep(seconds)
    else:
        time.sleep(5)
        proxy.black_hole()
        time.sleep(heal_after)
        proxy.restore()
        time.sleep(seconds - heal_after - 5)
    end = time.time()
    proxy.delay(0)
    time.sleep(15)  # messages still in flight reach the worker
    return start, end


SCHEDULE = {
    "five": {"every": 5},
    "two": {"every": 2},
    "two-skip": {"every": 2, "options": {"singleton_beat": {"misfire": "skip"}}},
}


def test_a_slow_broker_sends_no_slot_twice_and_every_skip_is_counted_truthfully(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """Broker answering 4 s per chunk, claim TTL 3 s, three replicas for 60 s."""
    with beat_cluster(tmp_path, three_masters, SCHEDULE, singleton_beat_claim_ttl=3.0) as c:
        assert c.broker is not None
        proxy = TcpProxy(c.broker.port)
        try:
            window = run_through(c, proxy, 60, heal_after=None)
            check_every_slot_accounted(c, three_masters, SCHEDULE, window)
        finally:
            proxy.close()


def test_a_black_holed_broker_sends_no_slot_twice_and_every_skip_is_counted_truthfully(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """The broker accepts and never answers for 20 s, then heals; three replicas."""
    settings = {"singleton_beat_claim_ttl": 3.0, "singleton_beat_publish_timeout": 5.0}
    with beat_cluster(tmp_path, three_masters, SCHEDULE, **settings) as c:
        assert c.broker is not None
        proxy = TcpProxy(c.broker.port)
        try:
            window = run_through(c, proxy, 60, heal_after=20)
            check_every_slot_accounted(c, three_masters, SCHEDULE, window)
            logs = "".join(p.text() for p in c.processes if p.name.startswith("r"))
            assert "publishing" in logs and "failed" in logs, "the failed publishes are logged"
        finally:
            proxy.close()


def test_a_replica_dying_between_claim_and_publish_delays_a_short_entry_never_skips_it(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """A 1 s entry, a 3 s claim TTL: the slot the dead replica claimed is sent late by
    another replica, with its task id, not counted as missed."""
    settings = {"singleton_beat_claim_ttl": 3.0}
    with beat_cluster(tmp_path, three_masters, {"one": {"every": 1}}, **settings) as cluster:
        cluster.start_worker()
        cluster.start_replica("steady")
        wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
        start = time.time()
        crasher = cluster.start_replica(
            "crasher", scheduler="tests.beat.app:CrashAfterClaim", TEST_CRASH_ENTRY="one"
        )
        wait_for(lambda: not crasher.alive(), 60, f"the crash hook\n{crasher.text()}")
        time.sleep(6)
        end = time.time() - 1.5
        rows = cluster.executions()
        skipped = master_hash(three_masters, f"{PREFIX}entry:one").get("skipped", 0)
    assert crasher.popen.returncode == 17
    counts = Counter(slot_ms(r["slot"]) for r in rows if r["entry"] == "one")
    expected = interval_slots(1, start, end)
    assert sorted(s for s in expected if counts[s] != 1) == [], "each slot ran exactly once"
    assert skipped == 0, "no slot was counted as missed"

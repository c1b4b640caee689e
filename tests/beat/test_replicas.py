"""The product's promise, under failure: beat replicas as real processes, a real worker,
real Redis masters. Each slot in the observed window is executed exactly once."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celery_singleton_beat.core.schema import Keys
from celery_singleton_beat.testing import Process, RedisServer, free_port, http_status, wait_for
from tests.support.clusters import (
    FAST,
    BeatCluster,
    beat_cluster,
    check_exactly_once,
    executed_slots,
    master_hash,
    slot_ms,
)

pytestmark = pytest.mark.slow

Cluster = Callable[[int], list[RedisServer]]
TWO_ENTRIES = {"one": {"every": 1}, "two": {"every": 2}}
Store = list[RedisServer] | dict[str, Any]


@pytest.fixture(
    params=[
        "redis",
        pytest.param(
            "postgresql", marks=pytest.mark.django_db(transaction=True, databases=["postgres"])
        ),
    ]
)
def store(request: pytest.FixtureRequest, redis_cluster: Cluster) -> Store:
    """Where the replicas share the schedule: three Redis masters, or PostgreSQL (the
    test database, migrated; the replicas run with no Redis master at all)."""
    if request.param == "redis":
        return redis_cluster(3)
    from django.db import connections

    given = connections["postgres"].settings_dict
    return {k: given[k] for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")}


def entry_counts(store: Store, entry: str) -> dict[str, int]:
    """An entry's progress as the store keeps it: last slot, dispatched, skipped."""
    if isinstance(store, list):
        return master_hash(store, Keys().entry(entry))
    from django_celery_singleton_beat.stores import DatabaseSlotStore

    return DatabaseSlotStore("postgres").entry_counts(entry)


def dispatched(store: Store, entry: str) -> int:
    """How many slots of ``entry`` the store counts as dispatched."""
    return entry_counts(store, entry).get("dispatched", 0)


def replica_tick(store: Store, replica: str) -> float:
    """The wall-clock time of a replica's latest heartbeat."""
    if isinstance(store, list):
        return master_replica_tick(store, replica)
    from django_celery_singleton_beat.stores import DatabaseSlotStore

    rows = DatabaseSlotStore("postgres").replicas()
    return max(float(r["last_tick"]) for r in rows if f"{r['host']}:{r['pid']}" == replica)


LOADED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] singleton beat: "
    r"\d+ entries loaded",
    re.MULTILINE,
)


SENT = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] Scheduler: "
    r"Sending due task \S+ \(\S+\) for slot (\S+)$",
    re.MULTILINE,
)

MISSED = re.compile(r"singleton beat: entry '\w+' missed (\d+) slot\(s\)")


def _epoch(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()


def sent(replica: Process) -> list[tuple[float, int]]:
    """(when, slot ms) of each slot the replica's processes logged sending."""
    return [(_epoch(stamp), slot_ms(label)) for stamp, label in SENT.findall(replica.text())]


def loads(replica: Process) -> int:
    """How many times a replica's process (its log is kept across restarts) loaded the
    schedule: once per start, when it begins to tick."""
    return len(LOADED.findall(replica.text()))


def missed(replica: Process) -> int:
    """How many slots the replica's processes logged as missed under their misfire policy."""
    return sum(int(n) for n in MISSED.findall(replica.text()))


def start_cluster(cluster: BeatCluster, *names: str) -> list[Process]:
    """A worker and the named replicas, returned once the first slots have run."""
    cluster.start_worker()
    replicas = [cluster.start_replica(name) for name in names]
    wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
    return replicas


def test_three_active_replicas_execute_every_slot_exactly_once(
    store: Store, tmp_path: Path
) -> None:
    # no share-out: every replica claims every slot when it falls due, and the claims
    # alone decide which one sends it (tests/beat/test_share.py shares the entries out)
    racing = {**FAST, "singleton_beat_share_grace": 0}
    with beat_cluster(tmp_path, store, TWO_ENTRIES, **racing) as cluster:
        start_cluster(cluster, "r1", "r2", "r3")
        start = time.time()
        time.sleep(32)
        end = time.time() - 1.5
        rows = cluster.executions()
    check_exactly_once(rows, "one", 1, start, end)
    check_exactly_once(rows, "two", 2, start, end)
    assert len({r["replica"] for r in rows}) >= 2, "active mode: more than one replica sends"
    assert dispatched(store, "one") >= 30, "the store (not another one) counted the slots"


def test_killing_the_replica_that_dispatched_last_loses_and_repeats_nothing(
    store: Store, tmp_path: Path
) -> None:
    with beat_cluster(tmp_path, store, TWO_ENTRIES, **FAST) as cluster:
        start_cluster(cluster, "r1", "r2", "r3")
        start = time.time()
        kills = 0
        while kills < 6:
            time.sleep(4.5)
            last = cluster.executions()[-1]["replica"]
            cluster.restart(cluster.replica_of(last))
            kills += 1
        time.sleep(4)
        end = time.time() - 1.5
        rows = cluster.executions()
    check_exactly_once(rows, "one", 1, start, end)
    check_exactly_once(rows, "two", 2, start, end)
    times = sorted(r["at"] for r in rows if r["entry"] == "one" and start <= r["at"] <= end)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # a slot claimed by the killed replica waits for its claim to expire (the claim TTL),
    # then for the next look of a live replica (at most 250 ms)
    bound = 1 + FAST["singleton_beat_claim_ttl"] + 0.5
    assert max(gaps) < bound, f"longest gap between runs of a 1 s entry: {max(gaps):.2f}s"


def test_a_replica_paused_past_the_claim_ttl_resumes_without_duplicates(
    store: Store, tmp_path: Path
) -> None:
    with beat_cluster(tmp_path, store, TWO_ENTRIES, **FAST) as cluster:
        replicas = start_cluster(cluster, "r1", "r2", "r3")
        start = time.time()
        paused = replicas[0]
        paused.popen.send_signal(19)  # SIGSTOP
        time.sleep(3 * FAST["singleton_beat_claim_ttl"])
        paused.popen.send_signal(18)  # SIGCONT
        resumed = time.time()
        time.sleep(6)
        end = time.time() - 1.5
        rows = cluster.executions()
        heartbeat = replica_tick(store, cluster.replica_id(paused))
        assert paused.alive()
    check_exactly_once(rows, "one", 1, start, end)
    check_exactly_once(rows, "two", 2, start, end)
    assert heartbeat > resumed, "the resumed replica ticks again"


def master_replica_tick(masters: list[RedisServer], replica: str) -> float:
    for master in masters:
        raw = master.client().get(Keys().replica(replica))
        if raw:
            return float(json.loads(raw)["last_tick"])
    return 0.0


def test_leader_mode_fails_over_within_the_lease_ttl_and_a_paused_leader_steps_down(
    store: Store, tmp_path: Path
) -> None:
    settings = {**FAST, "singleton_beat_mode": "leader"}
    lease_ttl = settings["singleton_beat_lease_ttl"]
    with beat_cluster(tmp_path, store, {"one": {"every": 1}}, **settings) as cluster:
        start_cluster(cluster, "r1", "r2", "r3")
        start = time.time()
        leader = cluster.replica_of(cluster.executions()[-1]["replica"])
        cluster.kill(leader)
        killed = time.time()
        wait_for(lambda: any(r["at"] > killed for r in cluster.executions()), 10, "a new leader")
        takeover = min(r["at"] for r in cluster.executions() if r["at"] > killed)
        assert takeover - killed <= lease_ttl + 1
        time.sleep(2)
        leader = cluster.replica_of(cluster.executions()[-1]["replica"])
        leader.popen.send_signal(19)  # SIGSTOP past the lease
        time.sleep(lease_ttl + 2)
        leader.popen.send_signal(18)
        wait_for(lambda: "steps down to standby" in leader.text(), 10, "the old leader steps down")
        time.sleep(3)
        end = time.time() - 1.5
        rows = cluster.executions()
        assert leader.alive()
    counts = executed_slots(rows, "one")
    assert [s for s, n in counts.items() if n > 1] == []
    assert "Traceback" not in leader.text()
    assert start < end


def test_losing_one_master_changes_nothing_and_losing_two_stops_publishing_until_back(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    schedule = {
        "one": {"every": 1},
        "skip": {"every": 1, "options": {"singleton_beat": {"misfire": "skip"}}},
    }
    with beat_cluster(tmp_path, three_masters, schedule, **FAST) as cluster:
        cluster.start_worker()
        replicas = [
            cluster.start_replica(f"r{i}", settings={"singleton_beat_health_port": port})
            for i, port in enumerate(ports)
        ]
        wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
        wait_for(lambda: http_status(ports[0], "/readyz") == 200, 10, "/readyz 200")
        start = time.time()
        three_masters[0].kill()
        time.sleep(6)
        end = time.time() - 1.5
        check_exactly_once(cluster.executions(), "one", 1, start, end)

        three_masters[1].kill()
        wait_for(lambda: http_status(ports[0], "/readyz") == 503, 10, "/readyz 503")
        assert http_status(ports[0], "/healthz") == 200, "the loop is alive, only not ready"
        time.sleep(1.5)
        before = len(cluster.executions())
        time.sleep(5)
        assert len(cluster.executions()) == before, "nothing is published without a majority"

        three_masters[0].start()
        three_masters[1].start()
        wait_for(lambda: http_status(ports[0], "/readyz") == 200, 15, "/readyz 200 again")
        resumed = time.time()
        time.sleep(5)
        rows = cluster.executions()
        skipped = master_hash(three_masters, "singleton-beat:entry:skip").get("skipped", 0)
        logs = [r.text() for r in replicas]
    counts = executed_slots(rows, "one")
    assert [s for s, n in counts.items() if n > 1] == []
    assert any(r["at"] > resumed for r in rows), "dispatch resumes by itself"
    assert skipped >= 5, "the skip entry counts the slots missed while no majority answered"
    for log in logs:
        assert len(re.findall("no majority of Redis masters reachable", log)) == 1
        assert log.count("a majority of Redis masters answers again") == 1


def test_a_slot_sent_again_after_its_replica_died_between_publish_and_done_runs_once(
    store: Store, tmp_path: Path
) -> None:
    """``record`` is a plain task (no base of the library): the steady replica sends the
    crashed one's slot again with the same task id, and the worker drops that copy."""
    with beat_cluster(tmp_path, store, {"two": {"every": 2}}, **FAST) as cluster:
        cluster.start_worker()
        crasher = cluster.start_replica(
            "crasher", scheduler="tests.beat.app:CrashAfterPublish", TEST_CRASH_ENTRY="two"
        )
        cluster.start_replica("steady")
        wait_for(lambda: not crasher.alive(), 60, f"the crash hook\n{crasher.text()}")
        assert crasher.popen.returncode == 17
        crashed = cluster.replica_id(crasher)
        wait_for(cluster.skipped, 15, "the slot sent again to reach the worker")
        time.sleep(3)
        rows, skipped = cluster.executions(), cluster.skipped()
    lost = [r for r in rows if r["replica"] == crashed][-1]
    assert [r["task_id"] for r in rows if r["slot"] == lost["slot"]] == [lost["task_id"]]
    check_exactly_once(rows, "two", 2, rows[0]["at"], rows[-1]["at"] - 1)
    assert [(s["task_id"], s["reason"], s["entry"], s["slot"]) for s in skipped] == [
        (lost["task_id"], "skipped_duplicate", "two", lost["slot"])
    ]


@pytest.mark.parametrize("policy", ["coalesce", "skip"])
def test_after_all_replicas_were_down_the_misfire_policy_decides(
    store: Store, tmp_path: Path, policy: str
) -> None:
    schedule = {"four": {"every": 4, "options": {"singleton_beat": {"misfire": policy}}}}
    with beat_cluster(tmp_path, store, schedule, **FAST) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2")]
        wait_for(lambda: len(cluster.executions()) >= 1, 30, "first execution")
        wait_for(lambda: all(loads(r) == 1 for r in replicas), 30, "both replicas running")
        for replica in replicas:
            cluster.kill(replica)
        down = time.time()
        time.sleep(10)
        while time.time() % 4 < 2 or time.time() % 4 > 2.3:  # restart 2 s after a slot
            time.sleep(0.02)
        restarting = time.time()  # slots up to here passed with no replica running
        restarted = [cluster.restart(replica) for replica in replicas]
        wait_for(lambda: all(loads(r) == 2 for r in restarted), 30, "the replicas back")
        back = time.time()  # both replicas have read the entries' progress
        time.sleep(9)
        rows = cluster.executions()
        skipped = entry_counts(store, "four").get("skipped", 0)
    sends: dict[int, float] = {}
    for at, slot in sorted(at_slot for r in restarted for at_slot in sent(r)):
        sends.setdefault(slot, at)
    # the newest slot sent before the kill (its run may end after it)
    last_before = max(slot for slot, at in sends.items() if at <= down)
    dead = list(range(last_before + 4000, int(restarting * 1000) + 1, 4000))
    after = sorted(slot_ms(r["slot"]) for r in rows if slot_ms(r["slot"]) > last_before)
    assert len(dead) >= 2 and after, (dead, after)
    # every slot since the kill is counted once: run, or skipped by the policy
    first = after[0]
    assert after == list(range(first, after[-1] + 1, 4000)), "no slot lost or run twice"
    assert skipped == (first - last_before) // 4000 - 1
    assert skipped >= len(dead) - 1
    assert skipped == sum(missed(r) for r in restarted), "each skip is logged"
    if policy == "coalesce":
        # the newest slot missed by the time the replicas were back (however long they
        # took to start), sent as they start: not a later one waited for
        assert max(dead) <= first <= back * 1000, "coalesce fires the newest missed slot"
        assert sends[first] <= back + 1.5, "sent when the replicas are back"
    else:
        assert first > restarting * 1000, "skip sends no slot that passed while all were down"
        assert skipped >= len(dead)

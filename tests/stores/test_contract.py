"""The slot-store contract, run against every store: memory, Redis over 1, 3 and 5 real
masters, a Redis Cluster (3 primaries with a replica each), and the Django app's database
store on SQLite, PostgreSQL and MariaDB, and a ZooKeeper server.

Expiry is real time on the store's own clock, with TTLs of a few tenths of a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from django.db import connections

from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.core.schema import ClaimStatus, Outcome
from celery_singleton_beat.stores import MemorySlotStore, SlotOutcome, SlotStore
from celery_singleton_beat.stores.redis import RedisSlotStore
from celery_singleton_beat.testing import RedisClusterServers, RedisServer
from tests.support.databases import (
    SQLALCHEMY_VENDORS,
    database_alias,
    sqlalchemy_database,
    with_databases,
)

CLAIMED, HELD, DONE = ClaimStatus.CLAIMED, ClaimStatus.HELD, ClaimStatus.DONE
SENT = Outcome.DISPATCHED.value
MISSED = Outcome.SKIPPED_MISFIRE.value


@pytest.fixture(
    params=[
        *with_databases("memory", "redis-1", "redis-3", "redis-5", "redis-cluster"),
        *(f"sqlalchemy-{vendor}" for vendor in SQLALCHEMY_VENDORS),
        "zookeeper",
    ]
)
def store(
    request: pytest.FixtureRequest, redis_cluster: Callable[[int], list[RedisServer]]
) -> Iterator[SlotStore]:
    kind, _, detail = request.param.partition("-")
    if kind == "sqlalchemy":
        from celery_singleton_beat.stores.sqlalchemy import SqlAlchemySlotStore

        url = sqlalchemy_database(request, detail)
        made: SlotStore = SqlAlchemySlotStore(url)
    elif kind == "memory":
        made = MemorySlotStore()
    elif kind == "zookeeper":
        from celery_singleton_beat.stores.zookeeper import ZooKeeperSlotStore

        made = ZooKeeperSlotStore(request.getfixturevalue("zookeeper")())
    elif request.param == "redis-cluster":
        sharded: RedisClusterServers = request.getfixturevalue("shared_sharded_cluster")
        made = RedisSlotStore(Masters.from_urls([sharded.url], 1.0), "contract:")
    elif kind == "redis":
        servers = redis_cluster(int(detail))
        made = RedisSlotStore(Masters.from_urls([s.url for s in servers], 1.0), "contract:")
    else:
        from django_celery_singleton_beat.stores import DatabaseSlotStore

        made = DatabaseSlotStore(using=database_alias(request.param))
    yield made
    made.close()


def info(host: str, pid: int) -> dict[str, object]:
    return {"host": host, "pid": pid, "last_tick": 1.0, "role": "active"}


def listed(store: SlotStore) -> list[dict[str, object]]:
    """The replicas' info as given (a store may add ``seen_ago``, on its own clock)."""
    return [{k: v for k, v in r.items() if k != "seen_ago"} for r in store.replicas()]


# -- entries ----------------------------------------------------------------------------


def test_a_new_entry_starts_where_it_was_first_seen_and_keeps_its_anchor(
    store: SlotStore,
) -> None:
    assert store.init([("new", 1_000), ("cron", None)], now=12_345) == [
        (12_345, 12_000),
        (12_345, None),
    ]
    assert store.init([("new", 1_000), ("cron", None)], now=99_999) == [
        (12_345, 12_000),
        (12_345, None),
    ]


def test_an_entry_continues_from_its_newest_finished_slot(store: SlotStore) -> None:
    store.init([("e", None)], now=1_000)
    assert store.claim([("e", 5_000)], "a", ttl=1, retention=60)[0].status == CLAIMED
    assert store.finish([SlotOutcome("e", 5_000, SENT, 1, 0)], "a", 60) == [True]
    assert store.init([("e", None)], now=90_000) == [(5_000, None)]


def test_finishing_counts_and_never_lowers_the_last_slot(store: SlotStore) -> None:
    store.init([("e", None)], now=1_000)
    store.claim([("e", 9_000), ("e", 8_000)], "a", ttl=1, retention=60)
    finished = store.finish(
        [SlotOutcome("e", 9_000, SENT, 1, 0), SlotOutcome("e", 8_000, MISSED, 0, 3)], "a", 60
    )
    assert finished == [True, True]
    assert store.entry_counts("e") == {"last": 9_000, "dispatched": 1, "skipped": 3}
    assert store.entry_counts("unknown") == {}


# -- claims -----------------------------------------------------------------------------


def test_a_batch_is_claimed_in_order_with_the_entries_last_slot(store: SlotStore) -> None:
    store.init([("a", None), ("b", None)], now=100)
    claims = store.claim([("a", 200), ("b", 300), ("a", 400)], "t", ttl=1, retention=60)
    assert [(c.status, c.last, c.taken_over) for c in claims] == [
        (CLAIMED, 100, False),
        (CLAIMED, 100, False),
        (CLAIMED, 100, False),
    ]


def test_a_live_claim_is_held_and_an_expired_one_is_taken_over(store: SlotStore) -> None:
    assert store.claim([("e", 1)], "a", ttl=0.2, retention=60)[0].status == CLAIMED
    held = store.claim([("e", 1)], "b", ttl=0.2, retention=60)[0]
    assert (held.status, held.taken_over) == (HELD, False)
    time.sleep(0.3)
    taken = store.claim([("e", 1)], "b", ttl=0.2, retention=60)[0]
    assert (taken.status, taken.taken_over) == (CLAIMED, True)


def test_the_holder_claiming_again_keeps_its_claim(store: SlotStore) -> None:
    store.claim([("e", 1)], "a", ttl=0.2, retention=60)
    again = store.claim([("e", 1)], "a", ttl=5, retention=60)[0]
    assert (again.status, again.taken_over) == (CLAIMED, False)
    time.sleep(0.3)
    assert store.claim([("e", 1)], "b", ttl=1, retention=60)[0].status == HELD


def test_a_decided_slot_is_done_for_everyone(store: SlotStore) -> None:
    store.claim([("e", 1)], "a", ttl=1, retention=60)
    store.finish([SlotOutcome("e", 1, SENT, 1, 0)], "a", 60)
    assert [c.status for c in store.claim([("e", 1)], "a", ttl=1, retention=60)] == [DONE]
    assert [c.status for c in store.claim([("e", 1)], "b", ttl=1, retention=60)] == [DONE]


def test_outcomes_tell_a_sent_slot_from_a_skipped_one_and_an_undecided_one(
    store: SlotStore,
) -> None:
    store.claim([("e", 1), ("e", 2), ("e", 3)], "a", ttl=5, retention=60)
    store.finish([SlotOutcome("e", 1, SENT, 1, 0), SlotOutcome("e", 2, MISSED, 0, 1)], "a", 60)
    assert store.outcomes([("e", 1), ("e", 2), ("e", 3), ("e", 4)]) == [SENT, MISSED, None, None]
    assert store.outcomes([]) == []


def test_a_given_back_claim_is_claimed_at_once_and_not_as_a_take_over(
    store: SlotStore,
) -> None:
    store.claim([("e", 1), ("e", 2)], "a", ttl=30, retention=60)
    store.unclaim([("e", 1)], "a")
    store.unclaim([("e", 2)], "b")  # not b's: left alone
    claims = store.claim([("e", 1), ("e", 2)], "b", ttl=1, retention=60)
    assert [(c.status, c.taken_over) for c in claims] == [(CLAIMED, False), (HELD, False)]


def test_a_decided_slot_cannot_be_given_back(store: SlotStore) -> None:
    store.claim([("e", 1)], "a", ttl=1, retention=60)
    store.finish([SlotOutcome("e", 1, SENT, 1, 0)], "a", 60)
    store.unclaim([("e", 1)], "a")
    assert store.claim([("e", 1)], "b", ttl=1, retention=60)[0].status == DONE


def test_replicas_claiming_the_same_slots_at_once_get_each_slot_once(store: SlotStore) -> None:
    fences = [("e", slot) for slot in range(0, 300_000, 1_000)]
    claims: dict[str, list[ClaimStatus | None]] = {}

    def replica(token: str) -> None:
        try:
            claims[token] = [c.status for c in store.claim(fences, token, ttl=30, retention=60)]
        finally:
            connections.close_all()  # this thread's database connections, if any

    threads = [threading.Thread(target=replica, args=(f"r{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [[t for t in sorted(claims) if claims[t][i] == CLAIMED] for i in range(len(fences))]
    assert {s for statuses in claims.values() for s in statuses} == {CLAIMED, HELD}, (
        "every replica got an answer"
    )
    assert [len(w) for w in winners] == [1] * len(fences)


# -- finishing --------------------------------------------------------------------------


def test_finishing_needs_the_claim_still_ours(store: SlotStore) -> None:
    store.claim([("e", 1)], "a", ttl=0.1, retention=60)
    time.sleep(0.2)
    store.claim([("e", 1)], "b", ttl=5, retention=60)
    assert store.finish([SlotOutcome("e", 1, SENT, 1, 0)], "a", 60) == [False]
    assert store.entry_counts("e").get("dispatched", 0) == 0
    assert store.finish([SlotOutcome("e", 1, SENT, 1, 0)], "b", 60) == [True]
    assert store.finish([SlotOutcome("e", 1, SENT, 1, 0)], "b", 60) == [False]
    assert store.entry_counts("e")["dispatched"] == 1


def test_a_slot_whose_claim_was_lost_with_the_store_is_still_marked_done(
    store: SlotStore,
) -> None:
    assert store.finish([SlotOutcome("e", 7, SENT, 1, 0)], "a", 60) == [True]
    assert store.claim([("e", 7)], "b", ttl=1, retention=60)[0].status == DONE


# -- extending --------------------------------------------------------------------------


def test_extending_keeps_a_claim_past_its_ttl_and_fails_once_taken_over(
    store: SlotStore,
) -> None:
    store.claim([("e", 1)], "a", ttl=0.3, retention=60)
    for _ in range(3):
        time.sleep(0.15)
        assert store.extend([("e", 1)], "a", ttl=0.3, retention=60) == [True]
    assert store.claim([("e", 1)], "b", ttl=0.3, retention=60)[0].status == HELD
    time.sleep(0.4)
    assert store.claim([("e", 1)], "b", ttl=5, retention=60)[0].status == CLAIMED
    assert store.extend([("e", 1)], "a", ttl=0.3, retention=60) == [False]


def test_extending_a_decided_or_unknown_slot_fails(store: SlotStore) -> None:
    store.claim([("e", 1)], "a", ttl=1, retention=60)
    store.finish([SlotOutcome("e", 1, SENT, 1, 0)], "a", 60)
    assert store.extend([("e", 1), ("e", 2)], "a", ttl=1, retention=60) == [False, False]
    assert store.extend([], "a", ttl=1, retention=60) == []


# -- replicas ---------------------------------------------------------------------------


def test_heartbeats_count_and_list_the_live_replicas(store: SlotStore) -> None:
    assert store.heartbeat("h1:1", info("h1", 1), ttl=5) == 1
    assert store.heartbeat("h0:2", info("h0", 2), ttl=5) == 2
    assert listed(store) == [info("h0", 2), info("h1", 1)]
    store.forget_replica("h0:2")
    assert listed(store) == [info("h1", 1)]


def test_a_replica_without_a_heartbeat_drops_off_after_its_ttl(store: SlotStore) -> None:
    store.heartbeat("gone:1", info("gone", 1), ttl=0.2)
    time.sleep(0.4)
    assert store.heartbeat("here:2", info("here", 2), ttl=5) == 1
    assert listed(store) == [info("here", 2)]


def test_a_replica_is_listed_with_the_seconds_since_its_heartbeat_on_the_stores_clock(
    store: SlotStore,
) -> None:
    store.heartbeat("h1:1", {**info("h1", 1), "ttl": 5}, ttl=5)
    (fresh,) = store.replicas()
    assert 0 <= fresh["seen_ago"] < 0.25
    time.sleep(0.5)
    (later,) = store.replicas()
    assert 0.5 <= later["seen_ago"] < 1.5
    store.heartbeat("h1:1", {**info("h1", 1), "ttl": 5}, ttl=5)
    assert store.replicas()[0]["seen_ago"] < 0.25


# -- the leader's lock ------------------------------------------------------------------


def test_the_leader_lock_is_exclusive_on_the_store(store: SlotStore) -> None:
    first, second = store.leader_lock("a"), store.leader_lock("b")
    lease = first.acquire("leader", ttl=5)
    assert lease is not None
    assert second.acquire("leader", ttl=5) is None
    first.release(lease)
    assert second.acquire("leader", ttl=5) is not None


# -- schedules that change while beat runs ----------------------------------------------


def test_an_entry_seen_late_starts_at_that_moment_and_never_goes_back(store: SlotStore) -> None:
    store.init([("e", None), ("f", None)], now=1_000)
    store.start_at(["e"], 50_000)
    store.start_at(["e"], 40_000)  # never lowered
    store.start_at([], 99_000)
    assert store.init([("e", None), ("f", None)], now=2_000) == [(50_000, None), (1_000, None)]


def test_when_an_entry_left_the_schedule_is_kept_and_the_newest_wins(store: SlotStore) -> None:
    store.init([("e", None), ("f", None)], now=1_000)
    assert store.gone(["e", "f", "unknown"]) == [0, 0, 0]
    store.mark_gone(["e"], 7_000)
    store.mark_gone(["e"], 9_000)
    assert store.gone(["e", "f"]) == [9_000, 0]
    assert store.gone([]) == []


def test_anchors_are_read_as_stored(store: SlotStore) -> None:
    store.init([("e", 1_000)], now=12_345)
    assert store.anchors([("e", 1_000), ("e", 5_000), ("x", 1_000)]) == [12_000, None, None]
    assert store.anchors([]) == []


# -- the runtime schedule -----------------------------------------------------------------


def test_the_runtime_schedule_is_written_only_by_a_newer_revision(store: SlotStore) -> None:
    assert store.schedule_revision() == 0
    assert store.read_schedule() == (0, {})
    assert store.write_schedule(1, {"entries": {"a": {"every": 5}}}) is True
    assert store.write_schedule(1, {"entries": {"lost": {}}}) is False  # a racing editor
    assert store.read_schedule() == (1, {"entries": {"a": {"every": 5}}})
    assert store.write_schedule(2, {"entries": {}, "paused": {"a": {"by": "ops"}}}) is True
    assert store.schedule_revision() == 2
    assert store.read_schedule()[1] == {"entries": {}, "paused": {"a": {"by": "ops"}}}


def test_a_sent_run_now_is_remembered_for_its_retention(store: SlotStore) -> None:
    assert store.runs_sent(["r1", "r2"]) == set()
    store.mark_runs_sent(["r1"], retention=0.3)
    store.mark_runs_sent(["r3"], retention=60)
    assert store.runs_sent(["r1", "r2", "r3"]) == {"r1", "r3"}
    time.sleep(0.5)
    assert store.runs_sent(["r1", "r3"]) == {"r3"}
    assert store.runs_sent([]) == set()


# -- run state (overlap policy) -------------------------------------------------------------


def test_run_state_fields_only_rise_and_held_back_slots_are_counted(store: SlotStore) -> None:
    zero = {"queued": 0, "started": 0, "finished": 0, "overlapped": 0}
    assert store.run_states(["e"]) == {"e": zero}
    store.raise_run_states([("e", "queued", 2_000), ("e", "started", 1_000)], retention=60)
    store.raise_run_states([("e", "queued", 1_500), ("e", "finished", 1_000)], retention=60)
    store.count_overlapped("e", 1)
    store.count_overlapped("e", 2)
    assert store.run_states(["e", "f"]) == {
        "e": {"queued": 2_000, "started": 1_000, "finished": 1_000, "overlapped": 3},
        "f": zero,
    }


def test_a_run_state_past_its_retention_counts_as_none(store: SlotStore) -> None:
    store.raise_run_states([("e", "queued", 2_000)], retention=0.3)
    time.sleep(0.5)
    assert store.run_states(["e"])["e"]["queued"] == 0


def test_a_heartbeat_reads_the_runtime_schedule_revision_in_the_same_round_trip(
    store: SlotStore,
) -> None:
    store.write_schedule(3, {"entries": {}})
    store.heartbeat("h1:1", info("h1", 1), ttl=5)
    store.write_schedule(4, {"entries": {}})  # after the heartbeat
    assert store.recent_schedule_revision(within=60) == 3  # the heartbeat's reading
    assert store.recent_schedule_revision(within=0) == 4  # too old: read now
    assert store.schedule_revision() == 4

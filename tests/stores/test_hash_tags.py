"""On a Redis Cluster every key one script or one batch item touches is in one hash slot,
as the cluster itself computes it (``CLUSTER KEYSLOT``); on standalone masters the keys
keep the names 0.1.0 wrote."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.core.schema import LEADER_LOCK, SCHEDULE_EDIT_LOCK, ran_lock
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.stores.redis import RedisSlotStore
from celery_singleton_beat.testing import RedisClusterServers

#: Entry and lock names, among them the awkward ones: braces open and closed, a brace
#: first, a colon, an empty pair, spaces and non-ASCII.
NAMES = ["billing", "a{b}c", "}first", "{}", "x}y{z", "ran:odd", "nightly report", "é{ü"]


@pytest.fixture
def on_cluster(
    shared_sharded_cluster: RedisClusterServers,
) -> Iterator[tuple[RedisClusterServers, RedisSlotStore, Redlock]]:
    masters = Masters.from_urls([shared_sharded_cluster.url], 1.0)
    store = RedisSlotStore(masters, "singleton-beat:")
    lock = Redlock(masters)
    yield shared_sharded_cluster, store, lock
    masters.close()


def slots(cluster: RedisClusterServers, keys: list[str]) -> set[int]:
    return {cluster.keyslot(key) for key in keys}


@pytest.mark.parametrize("name", NAMES)
def test_every_key_of_an_entry_and_of_its_slots_is_in_one_hash_slot(
    on_cluster: tuple[RedisClusterServers, RedisSlotStore, Redlock], name: str
) -> None:
    cluster, store, lock = on_cluster
    keys = [
        store.entry_key(name),
        store.anchor_key(name, 60_000),
        store.fence_key(name, 1_700_000_000_000),
        store.fence_key(name, 1_700_000_060_000),
        store.keys.run_state(name),
        lock.lock_key(ran_lock(name, "2026-01-01T00:00:00.000Z")),
        lock.fence_key(ran_lock(name, "2026-01-01T00:00:00.000Z")),
    ]
    assert len(slots(cluster, keys)) == 1, keys


@pytest.mark.parametrize("name", [*NAMES, LEADER_LOCK, SCHEDULE_EDIT_LOCK])
def test_a_lock_and_its_fencing_counter_are_in_one_hash_slot(
    on_cluster: tuple[RedisClusterServers, RedisSlotStore, Redlock], name: str
) -> None:
    cluster, _store, lock = on_cluster
    assert len(slots(cluster, [lock.lock_key(name), lock.fence_key(name)])) == 1


def test_the_replicas_and_the_runtime_schedule_share_one_hash_slot(
    on_cluster: tuple[RedisClusterServers, RedisSlotStore, Redlock],
) -> None:
    cluster, store, _lock = on_cluster
    keys = [
        store.replica_key("host-a:41"),
        store.replica_key("host{b}:42"),
        store.keys.replicas,
        store.keys.schedule_rev,
        store.keys.schedule_doc,
        store.keys.run_sent("0b4c"),
    ]
    assert len(slots(cluster, keys)) == 1, keys


def test_keys_on_standalone_masters_keep_the_names_0_1_0_wrote() -> None:
    masters = Masters.from_urls(["redis://127.0.0.1:7001/0"], 0.05)
    store, lock = RedisSlotStore(masters, "singleton-beat:"), Redlock(masters)
    assert [
        store.entry_key("billing"),
        store.anchor_key("billing", 60_000),
        store.fence_key("billing", 1_000),
        store.replica_key("h:1"),
        store.keys.replicas,
        store.keys.schedule_rev,
        lock.lock_key("task:x"),
        lock.fence_key("task:x"),
        lock.lock_key(ran_lock("billing", "s")),
    ] == [
        "singleton-beat:entry:billing",
        "singleton-beat:anchor:billing:60000",
        "singleton-beat:fire:billing:1000",
        "singleton-beat:replica:h:1",
        "singleton-beat:replicas",
        "singleton-beat:schedule:rev",
        "singleton-beat:lock:task:x",
        "singleton-beat:fence:task:x",
        "singleton-beat:lock:ran:billing:s",
    ]

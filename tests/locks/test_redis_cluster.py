"""Redlock and the slot store on a Redis Cluster whose slots move: ``MOVED`` and ``ASK``
are followed in the same call, and the slot map follows the cluster."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.errors import QuorumUnavailable
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.stores.redis import RedisSlotStore
from celery_singleton_beat.testing import RedisClusterServers


@pytest.fixture
def lock(sharded_cluster: RedisClusterServers) -> Iterator[Redlock]:
    made = Redlock.from_urls([sharded_cluster.url], node_timeout=0.5)
    yield made
    made.close()


def test_a_lease_whose_slot_moved_is_extended_released_and_fenced_on_the_new_primary(
    lock: Redlock, sharded_cluster: RedisClusterServers
) -> None:
    lease = lock.acquire("billing", ttl=30)
    assert lease is not None
    slot = sharded_cluster.keyslot(lock.lock_key("billing"))
    target = next(
        p for p in sharded_cluster.primaries() if p is not sharded_cluster.primary_of_slot(slot)
    )
    sharded_cluster.move_slot(slot, target)
    assert lock.extend(lease, ttl=30) is True, "MOVED is followed in the same call"
    assert target.client().pttl(lock.lock_key("billing")) > 25_000
    assert lock.release(lease) is True
    again = lock.acquire("billing", ttl=30)
    assert again is not None
    assert again.fence == lease.fence + 1, "the fencing counter moved with the slot"


def test_during_a_slot_migration_ask_is_followed_and_tryagain_fails_closed_until_it_ends(
    lock: Redlock, sharded_cluster: RedisClusterServers
) -> None:
    lease = lock.acquire("report", ttl=30)
    assert lease is not None
    slot = sharded_cluster.keyslot(lock.lock_key("report"))
    source = sharded_cluster.primary_of_slot(slot)
    target = next(p for p in sharded_cluster.primaries() if p is not source)
    sharded_cluster.start_moving(slot, target)
    sharded_cluster.migrate_keys(slot, source, target)  # the lock and its fence
    assert lock.extend(lease, ttl=30) is True, "ASK is followed, after ASKING"
    assert lock.release(lease) is True
    # a script whose keys are split between the two primaries: Redis answers TRYAGAIN
    with pytest.raises(QuorumUnavailable, match="TryAgainError"):
        lock.acquire("report", ttl=30)
    sharded_cluster.finish_moving(slot, source, target)
    again = lock.acquire("report", ttl=30)
    assert again is not None
    assert again.fence == lease.fence + 1


def test_a_batch_over_every_shard_follows_a_moved_slot_and_keeps_its_order(
    sharded_cluster: RedisClusterServers,
) -> None:
    store = RedisSlotStore(Masters.from_urls([sharded_cluster.url], 0.5), "p:")
    names = [f"entry-{n}" for n in range(30)]
    store.init([(name, None) for name in names], now=1_000)
    slot = sharded_cluster.keyslot(store.entry_key(names[7]))
    source = sharded_cluster.primary_of_slot(slot)
    sharded_cluster.move_slot(slot, next(p for p in sharded_cluster.primaries() if p is not source))
    claims = store.claim([(name, 5_000 + n) for n, name in enumerate(names)], "t", 5, 60)
    assert [(c.status, c.last) for c in claims] == [("claimed", 1_000)] * 30
    store.close()


@pytest.mark.parametrize(
    ("path", "reply"),
    [("/0", "MovedError|ClusterCrossSlotError"), ("/1", "SELECT is not allowed in cluster mode")],
)
def test_a_cluster_node_named_as_a_master_fails_saying_how_to_name_a_cluster(
    shared_sharded_cluster: RedisClusterServers, path: str, reply: str
) -> None:
    url = f"redis://127.0.0.1:{shared_sharded_cluster.nodes[0].port}{path}"
    plain = Redlock.from_urls([url], node_timeout=0.5)
    with pytest.raises(QuorumUnavailable) as failed:
        for n in range(8):  # some land in the node's own slots: a MOVED comes soon
            plain.acquire(f"key-{n}", ttl=5)
    plain.close()
    assert re.search(reply, str(failed.value))
    assert "the server is a node of a Redis Cluster: give its URL with ?cluster=true" in str(
        failed.value
    )

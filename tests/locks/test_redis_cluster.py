"""Redlock and the slot store on a Redis Cluster whose slots move: ``MOVED`` and ``ASK``
are followed in the same call, and the slot map follows the cluster."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.core.schema import ran_lock
from celery_singleton_beat.errors import QuorumUnavailable
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.stores.redis import RedisSlotStore
from celery_singleton_beat.testing import RedisClusterServers, RedisServer
from tests.support.round_trips import Trips


@pytest.fixture
def lock(sharded_cluster: RedisClusterServers) -> Iterator[Redlock]:
    made = Redlock.from_urls([sharded_cluster.url], node_timeout=0.5)
    yield made
    made.close()


def moving(cluster: RedisClusterServers, key: str) -> tuple[int, RedisServer, RedisServer]:
    """``key``'s hash slot, the primary serving it, and another primary to move it to."""
    slot = cluster.keyslot(key)
    source = cluster.primary_of_slot(slot)
    return slot, source, next(p for p in cluster.primaries() if p is not source)


def test_a_lease_whose_slot_moved_is_extended_released_and_fenced_on_the_new_primary(
    lock: Redlock, sharded_cluster: RedisClusterServers
) -> None:
    lease = lock.acquire("billing", ttl=30)
    assert lease is not None
    slot, _source, target = moving(sharded_cluster, lock.lock_key("billing"))
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
    slot, source, target = moving(sharded_cluster, lock.lock_key("report"))
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
    slot, _source, target = moving(sharded_cluster, store.entry_key(names[7]))
    sharded_cluster.move_slot(slot, target)
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


# -- each shard's replicas (WAIT) -------------------------------------------------------


def waits(server: RedisServer) -> int:
    """How many ``WAIT`` commands ``server`` ran."""
    stats: Any = server.client().info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def test_a_lock_waits_for_its_shards_replica_in_the_same_round_trip(
    lock: Redlock, sharded_cluster: RedisClusterServers, trips: Trips
) -> None:
    # the first grant waits for the new cluster's replica to be in step (a busy machine)
    lock.release(lock.acquire("report", ttl=5, wait=10) or pytest.fail("not acquired"))
    primary = sharded_cluster.primary_of(lock.lock_key("report"))
    before, trips.count = waits(primary), 0
    lease = lock.acquire("report", ttl=5)
    assert lease is not None
    assert (trips.count, waits(primary) - before) == (1, 1)
    replica = sharded_cluster.replica_of(primary).client()
    replica.execute_command("READONLY")
    assert replica.get(lock.lock_key("report")) == lease.token.encode()


def test_a_shard_whose_replica_does_not_acknowledge_counts_nothing_until_it_does(
    sharded_cluster: RedisClusterServers,
) -> None:
    lock = Redlock.from_urls([sharded_cluster.url], node_timeout=0.3)
    names = {sharded_cluster.primary_of(lock.lock_key(f"k{n}")).name: f"k{n}" for n in range(20)}
    assert len(names) == 3
    for name in names.values():  # every shard reached: its replicas known
        lock.release(lock.acquire(name, ttl=5) or pytest.fail("not acquired"))
    stalled, other = list(names.items())[:2]
    replica = sharded_cluster.replica_of(sharded_cluster.node(stalled[0]))
    replica.pause()
    try:
        with pytest.raises(QuorumUnavailable, match="0 of 1 replicas acknowledged"):
            lock.acquire(stalled[1], ttl=5)
        assert lock.acquire(other[1], ttl=5) is not None, "the other shards count"
    finally:
        replica.resume()
    assert lock.acquire(stalled[1], ttl=5) is not None
    lock.close()


def lag(cluster: RedisClusterServers, primary: RedisServer, tag: str) -> RedisServer:
    """Make ``primary``'s replica lag: stop it and write more to the primary than the
    replication link holds in flight (the kernel keeps what a stopped replica was sent:
    it would still get that much). Returns the replica, stopped."""
    replica = cluster.replica_of(primary)
    replica.pause()
    client = primary.client()
    filler = b"x" * 1_000_000
    for n in range(40):
        client.set(f"filler:{{{tag}}}:{n}", filler)
    return replica


@pytest.mark.parametrize("min_replicas", ["auto", 0])
def test_a_lock_granted_while_the_replica_lagged_is_lost_in_a_failover_only_without_wait(
    sharded_cluster: RedisClusterServers, min_replicas: int | str
) -> None:
    """The shard's replica lags (stopped, with 40 MB on their way to it); a lock is asked
    for; the primary is killed and the replica, resumed, promoted: it never got the lock.
    Waiting for the replica (the default), the lock was refused and nothing is lost;
    without (``min_replicas = 0``) it was granted, and the promoted replica grants it to a
    second owner."""
    first = Redlock.from_urls([sharded_cluster.url], node_timeout=0.3, min_replicas=min_replicas)
    first.release(first.acquire("billing", ttl=30) or pytest.fail("not acquired"))
    primary = sharded_cluster.primary_of(first.lock_key("billing"))
    replica = lag(sharded_cluster, primary, "billing")
    try:
        granted = first.acquire("billing", ttl=30)
    except QuorumUnavailable:
        granted = None
    sharded_cluster.kill_primary(primary, meanwhile=replica.resume)
    second = Redlock.from_urls([sharded_cluster.url], node_timeout=0.3)
    other = second.acquire("billing", ttl=30, wait=3)
    if min_replicas == 0:
        assert (granted is not None, other is not None) == (True, True), "two owners"
    else:
        assert granted is None, "refused: its replica had not acknowledged it"
        assert other is not None
    first.close()
    second.close()


def test_a_tls_cluster_s_shards_are_reached_over_tls_with_the_url_s_credentials() -> None:
    lock = Redlock.from_urls(["rediss://user:pw@10.0.0.1:6380?cluster=true"])
    shard = lock.masters.nodes[0].shard("10.0.0.2", 6381)
    connection = shard.checkout()
    assert type(connection).__name__ == "SSLConnection"
    assert (connection.host, connection.port, connection.username, connection.password) == (
        "10.0.0.2", 6381, "user", "pw",
    )  # fmt: skip
    assert (
        repr(lock) == "<Redlock [Redis Cluster rediss://***@10.0.0.1:6380?cluster=true] quorum=1>"
    )
    given = Redlock.from_urls(
        ["redis://10.0.0.1:6380?cluster=true"], use_ssl={"ssl_ca_certs": "/etc/ssl/ca.pem"}
    )
    connection = given.masters.nodes[0].shard("10.0.0.3", 6380).checkout()
    assert (type(connection).__name__, connection.ca_certs) == ("SSLConnection", "/etc/ssl/ca.pem")


def test_a_slot_s_mark_and_a_task_s_lock_in_two_hash_slots_are_taken_one_after_the_other(
    lock: Redlock, sharded_cluster: RedisClusterServers, trips: Trips
) -> None:
    """A slot-aware singleton task's ``ran`` mark carries its entry's hash tag and its lock
    the task key's: one script cannot take both, so the mark is taken, then the lock; a
    second copy of the slot finds the mark held and leaves the lock alone."""
    mark = ran_lock("nightly", "2026-01-01T00:00:00.000Z")
    assert not lock.masters.one_slot(lock.lock_key(mark), lock.lock_key("task:report"))
    lock.release(lock.acquire("task:report", ttl=5) or pytest.fail("not acquired"))
    warm = ran_lock("nightly", "2025-01-01T00:00:00.000Z")  # the mark's shard, reached
    lock.release(lock.acquire(warm, ttl=5) or pytest.fail("not acquired"))
    trips.count = 0
    first = lock.acquire_marked(
        "task:report", 30, token=lock._new_token(), marks=lock, mark=mark, mark_ttl=60
    )
    assert (first.mark is not None, first.lease is not None, trips.count) == (True, True, 2)
    copy = lock.acquire_marked(
        "task:report", 30, token=lock._new_token(), marks=lock, mark=mark, mark_ttl=60
    )
    assert (copy.mark, copy.lease) == (None, None)
    assert lock.holder("task:report") == first.lease.token

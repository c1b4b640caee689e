"""The lock contract, run against every backend: MemoryLock, Redlock over 1, 3 and 5
masters and on a Redis Cluster (3 primaries with a replica each), and the SQL lock on
SQLite, PostgreSQL and MariaDB through the Django app's DatabaseLock and through
SQLAlchemy (SqlAlchemyLock), and ZooKeeperLock on a ZooKeeper server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.locks import LockBackend, MemoryLock, Redlock
from celery_singleton_beat.testing import RedisClusterServers, RedisServer
from tests.support.databases import (
    SQLALCHEMY_VENDORS,
    database_alias,
    sqlalchemy_database,
    with_databases,
)


@pytest.fixture(
    params=[
        *with_databases("memory", "redlock-1", "redlock-3", "redlock-5", "redlock-cluster"),
        *(f"sqlalchemy-{vendor}" for vendor in SQLALCHEMY_VENDORS),
        "zookeeper",
    ]
)
def lock(
    request: pytest.FixtureRequest, redis_cluster: Callable[[int], list[RedisServer]]
) -> Iterator[LockBackend]:
    kind, _, detail = request.param.partition("-")
    if kind == "sqlalchemy":
        from celery_singleton_beat.locks.sqlalchemy import SqlAlchemyLock

        backend: LockBackend = SqlAlchemyLock(sqlalchemy_database(request, detail))
    elif kind == "memory":
        backend = MemoryLock()
    elif kind == "zookeeper":
        from celery_singleton_beat.locks.zookeeper import ZooKeeperLock

        backend = ZooKeeperLock(request.getfixturevalue("zookeeper")())
    elif request.param == "redlock-cluster":
        sharded: RedisClusterServers = request.getfixturevalue("shared_sharded_cluster")
        backend = Redlock.from_urls([sharded.url], node_timeout=0.2)
    elif kind == "redlock":
        backend = Redlock.from_urls([s.url for s in redis_cluster(int(detail))], node_timeout=0.2)
    else:
        from django_celery_singleton_beat.locks import DatabaseLock

        backend = DatabaseLock(using=database_alias(request.param))
    yield backend
    backend.close()


def test_acquire_grants_a_free_key(lock: LockBackend) -> None:
    lease = lock.acquire("k", ttl=5)
    assert lease is not None
    assert lease.key == "k"
    assert 4.5 < lease.remaining() <= 5
    assert lease.fence >= 1
    assert len(lease.token.split("@")[0]) == 32


def test_acquire_returns_none_while_another_owner_holds_the_key(lock: LockBackend) -> None:
    assert lock.acquire("k", ttl=5) is not None
    assert lock.acquire("k", ttl=5) is None


def test_different_keys_do_not_exclude_each_other(lock: LockBackend) -> None:
    assert lock.acquire("a", ttl=5) is not None
    assert lock.acquire("b", ttl=5) is not None


def test_release_frees_the_key_for_the_next_owner(lock: LockBackend) -> None:
    lease = lock.acquire("k", ttl=5)
    assert lease is not None
    assert lock.release(lease) is True
    assert lock.acquire("k", ttl=5) is not None


def test_release_twice_returns_false_the_second_time(lock: LockBackend) -> None:
    lease = lock.acquire("k", ttl=5)
    assert lease is not None
    assert lock.release(lease) is True
    assert lock.release(lease) is False


def test_release_of_an_expired_lease_held_by_another_returns_false(lock: LockBackend) -> None:
    lease = lock.acquire("k", ttl=0.2)
    assert lease is not None
    time.sleep(0.3)
    other = lock.acquire("k", ttl=5)
    assert other is not None
    assert lock.release(lease) is False
    assert lock.acquire("k", ttl=5) is None, "the stale release must not free the new owner's key"


def test_extend_keeps_the_key_past_its_first_ttl(lock: LockBackend) -> None:
    lease = lock.acquire("k", ttl=0.5)
    assert lease is not None
    time.sleep(0.3)
    assert lock.extend(lease, ttl=1.0) is True
    time.sleep(0.4)
    assert lease.remaining() > 0.4
    assert lock.acquire("k", ttl=5) is None


def test_extend_after_expiry_fails(lock: LockBackend) -> None:
    lease = lock.acquire("k", ttl=0.2)
    assert lease is not None
    time.sleep(0.3)
    assert lock.extend(lease, ttl=5) is False
    assert lease.remaining() == 0.0


def test_key_is_free_again_after_the_ttl(lock: LockBackend) -> None:
    assert lock.acquire("k", ttl=0.2) is not None
    time.sleep(0.3)
    assert lock.acquire("k", ttl=5) is not None


def test_fencing_tokens_strictly_increase_across_grants(lock: LockBackend) -> None:
    fences = []
    for _ in range(10):
        lease = lock.acquire("k", ttl=5)
        assert lease is not None
        fences.append(lease.fence)
        lock.release(lease)
    assert fences == sorted(set(fences))
    assert len(fences) == 10


def test_acquire_with_wait_gets_the_key_once_the_holder_releases(lock: LockBackend) -> None:
    lease = lock.acquire("k", ttl=5)
    assert lease is not None
    threading.Timer(0.2, lock.release, args=(lease,)).start()
    started = time.monotonic()
    second = lock.acquire("k", ttl=5, wait=3)
    assert second is not None
    assert 0.15 < time.monotonic() - started < 2.5


def test_acquire_with_wait_gives_up_after_wait(lock: LockBackend) -> None:
    assert lock.acquire("k", ttl=5) is not None
    started = time.monotonic()
    assert lock.acquire("k", ttl=5, wait=0.3) is None
    assert 0.3 <= time.monotonic() - started < 1.5


@pytest.mark.parametrize("ttl", [0, -1, "5", None])
def test_acquire_refuses_a_ttl_that_is_not_positive(lock: LockBackend, ttl: object) -> None:
    with pytest.raises(ConfigurationError, match=r"ttl = .* is not valid: a positive number of"):
        lock.acquire("k", ttl=ttl)  # type: ignore[arg-type]


def test_acquire_refuses_a_negative_wait(lock: LockBackend) -> None:
    with pytest.raises(ConfigurationError, match=r"wait = -1 is not valid: a number of seconds"):
        lock.acquire("k", ttl=5, wait=-1)


def test_the_holder_of_a_token_can_hand_the_key_to_whoever_presents_it(lock: LockBackend) -> None:
    first = lock.acquire("k", ttl=5, token="handover-token@successor")
    assert first is not None
    assert lock.holder("k") == "handover-token@successor"
    assert lock.acquire("k", ttl=5) is None, "a stranger is refused"
    assert lock.acquire("k", ttl=5, token="other@x") is None, "another token is refused"
    second = lock.acquire("k", ttl=5, token="handover-token@successor")
    assert second is not None
    assert second.fence > first.fence
    assert lock.release(second) is True
    assert lock.holder("k") is None


def test_release_nowait_frees_the_key_and_later_calls_read_clean_replies(
    lock: LockBackend,
) -> None:
    fences = []
    for _ in range(20):
        lease = lock.acquire("k", ttl=5)
        assert lease is not None, "the key posted free is free for the next acquire"
        fences.append(lease.fence)
        lock.release_nowait(lease)
    assert fences == sorted(set(fences))
    other = lock.acquire("other", ttl=5)
    assert other is not None
    assert lock.extend(other, ttl=5) is True
    assert lock.release(other) is True
    assert lock.holder("k") is None

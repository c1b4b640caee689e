"""The process's lease keeper: many short leases, one thread."""

from __future__ import annotations

import time

from celery_singleton_beat.locks import MemoryLock
from celery_singleton_beat.locks.watchdog import LeaseKeeper


def test_leases_stopped_before_their_turn_are_not_held_by_the_keeper() -> None:
    keeper, lock = LeaseKeeper(), MemoryLock()
    for i in range(1000):
        lease = lock.acquire(f"k{i}", ttl=60)
        assert lease is not None
        keeper.keep(lock, lease).stop()
        lock.release(lease)
    last = lock.acquire("last", ttl=60)
    assert last is not None
    kept = keeper.keep(lock, last)
    assert [entry[2] for entry in keeper._heap] == [kept]


def test_a_kept_lease_is_extended_before_it_expires_while_others_come_and_go() -> None:
    keeper, lock = LeaseKeeper(), MemoryLock()
    long = lock.acquire("long", ttl=0.3)
    assert long is not None
    kept = keeper.keep(lock, long)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        short = lock.acquire("short", ttl=60)
        assert short is not None
        keeper.keep(lock, short).stop()
        lock.release(short)
        time.sleep(0.01)
    assert (long.lost, long.remaining() > 0) == (False, True)
    kept.stop()

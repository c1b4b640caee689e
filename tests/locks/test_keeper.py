"""The process's lease keeper: many short leases, one thread."""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from typing import Any

from celery_singleton_beat.locks import MemoryLock, Redlock
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


def test_a_forked_child_keeps_its_own_leases_with_a_thread_of_its_own(
    redis_cluster: Any,
) -> None:
    """A prefork worker's child inherits the keeper without its thread (and maybe with its
    lock held by that thread at the fork): the child's first lease starts a thread of the
    child's own, which extends it."""
    (server,) = redis_cluster(1)
    keeper = LeaseKeeper()
    parent_lock = Redlock.from_urls([server.url])
    held = parent_lock.acquire("parent", ttl=60)
    assert held is not None
    keeper.keep(parent_lock, held)  # the parent's thread runs
    read, write = os.pipe()
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:  # another thread holds the keeper's lock at the fork
        with keeper._lock:
            taken.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(5)
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child reports through the pipe)
        try:
            lock = Redlock.from_urls([server.url])
            lease = lock.acquire("child", ttl=0.3)
            assert lease is not None
            kept = keeper.keep(lock, lease)
            time.sleep(1.0)  # over three TTLs: kept alive only by the child's own thread
            holds = lock.holder("child") == lease.token
            report = [lease.lost, lease.remaining() > 0, holds, len(keeper._heap)]
            kept.stop()
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    done.set()
    holder.join()
    os.close(write)
    ready, _, _ = select.select([read], [], [], 15)
    if not ready:
        os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert ready, "the child's keeper hung: the lock held at the fork was never freed"
    with os.fdopen(read) as pipe:
        lost, remaining, holds, queued = json.loads(pipe.read())
    assert (lost, remaining, holds) == (False, True, True)
    assert queued == 1  # the child's lease alone, not the parent's

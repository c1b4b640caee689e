"""A write counts on a primary only once its replicas acknowledged it (``WAIT``, in the same
batch as the write); a server that is not the primary is never written to. Real servers:
a primary with one replica (and its Sentinels, unused here)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.errors import QuorumUnavailable
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import SentinelGroup, sentinel_group
from tests.support.clusters import PREFIX
from tests.support.round_trips import Trips


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    with sentinel_group() as started:
        yield started


def waits(group: SentinelGroup) -> int:
    """How many ``WAIT`` commands the primary ran."""
    stats: Any = group.primary().client().info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def test_a_lock_waits_for_the_replica_the_primary_reports_in_the_same_round_trip(
    group: SentinelGroup, trips: Trips
) -> None:
    lock = Redlock.from_urls([group.primary().url])
    lock.release(lock.acquire("warm", ttl=5) or pytest.fail("not acquired"))
    before, trips.count = waits(group), 0
    lease = lock.acquire("report", ttl=5)
    assert lease is not None
    assert (trips.count, waits(group) - before) == (1, 1)
    replica = group.replicas()[0].client()
    assert replica.get(f"{PREFIX}lock:report") == lease.token.encode()


def test_a_lock_the_replica_did_not_acknowledge_does_not_count_and_one_line_says_so(
    group: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    lock = Redlock.from_urls([group.primary().url], node_timeout=0.3)
    assert lock.acquire("first", ttl=5) is not None
    replica = group.replicas()[0]
    replica.pause()
    try:
        with caplog.at_level(logging.WARNING, "celery_singleton_beat"):
            for key in ("a", "b", "c"):
                with pytest.raises(QuorumUnavailable, match="0 of 1 replicas acknowledged"):
                    lock.acquire(key, ttl=5)
            replica.resume()
            assert lock.acquire("d", ttl=5, wait=2) is not None
    finally:
        replica.resume()
    lines = [r.getMessage() for r in caplog.records if "replicas acknowledged" in r.getMessage()]
    name = f"127.0.0.1:{group.primary().port}"
    assert lines == [
        f"Redis member {name}: 0 of 1 replicas acknowledged within 150 ms; its writes do not "
        f"count (nothing is published on them) until they are",
        f"Redis member {name}: 1 of 1 replicas acknowledged; its writes count again",
    ]


def test_with_min_replicas_0_a_lock_counts_without_the_replica(group: SentinelGroup) -> None:
    lock = Redlock.from_urls([group.primary().url], min_replicas=0)
    replica = group.replicas()[0]
    replica.pause()
    try:
        assert lock.acquire("alone", ttl=5) is not None
    finally:
        replica.resume()


def test_a_replicas_url_is_never_written_to(group: SentinelGroup) -> None:
    replica = group.replicas()[0]
    lock = Redlock.from_urls([replica.url])
    with pytest.raises(QuorumUnavailable, match="is a slave, not the primary"):
        lock.acquire("report", ttl=5)
    assert replica.client().keys("*") == []


def test_beat_publishes_nothing_and_is_not_ready_while_the_replica_does_not_acknowledge(
    group: SentinelGroup, fired: list[events.SlotFired]
) -> None:
    app = Celery("acks", broker="memory://", set_as_current=False)
    app.conf.update(
        singleton_beat_redis_urls=[group.primary().url],
        beat_schedule={"every-second": {"task": "t", "schedule": 1.0}},
    )
    Runtime.of(app)
    sched = Scheduler(app=app)
    replica = group.replicas()[0]
    try:
        run(sched, 2.5)
        assert sched.ready()[0] and fired
        replica.pause()
        run(sched, 0.5)
        before = len(fired)
        run(sched, 3.0)
        stopped = (sched.ready(), len(fired) - before)
        replica.resume()
        run(sched, 2.5)
    finally:
        replica.resume()
        sched.close()
    ready, published = stopped
    assert (ready[0], published) == (False, 0)
    assert "0 of 1 replicas acknowledged" in ready[1]
    assert sched.ready()[0] and len(fired) > before


def run(sched: Scheduler, seconds: float) -> None:
    """Tick the scheduler as beat does, for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(sched.tick(), max(0.0, end - time.monotonic())))

"""Beat's broker connection: warmed before claiming, cut when a publish hangs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from celery import Celery

from celery_singleton_beat import _compat
from celery_singleton_beat.beat import broker
from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.testing import RedisServer, TcpProxy


@pytest.fixture
def proxied(redis_cluster: Callable[[int], list[RedisServer]]) -> tuple[Scheduler, TcpProxy]:
    master, queue = redis_cluster(2)
    proxy = TcpProxy(queue.port)
    app = Celery("broker-tests", broker=proxy.url)
    app.conf.update(
        singleton_beat_redis_urls=[master.url],
        beat_schedule={"e": {"task": "t", "schedule": 60.0}},
    )
    sched = Scheduler(app=app)
    yield sched, proxy
    sched.close()
    proxy.close()


def test_a_warmed_connection_publishes_in_one_round_trip_and_retries_nothing(
    proxied: tuple[Scheduler, TcpProxy],
) -> None:
    sched, proxy = proxied
    broker.warm(sched.producer, sched._queues())
    pools = _compat.broker_pools(sched.producer)
    connections = [c for pool in pools for c in _compat.pool_connections(pool)]
    assert {c.retry._retries for c in connections} == {0}, "redis-py retries nothing"
    assert not hasattr(sched.producer, "batch") or sched.producer.supports_batch_publish
    proxy.delay(0.5)
    started = time.monotonic()
    sched.app.send_task("t", producer=sched.producer, retry=False)
    assert time.monotonic() - started < 1.0, "declared at warm-up: one round trip"


def test_cutting_the_connection_fails_a_hanging_publish_at_once(
    proxied: tuple[Scheduler, TcpProxy],
) -> None:
    sched, proxy = proxied
    broker.warm(sched.producer, sched._queues())
    proxy.black_hole()
    threading.Timer(0.5, broker.cut, args=(sched.producer,)).start()
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017  (redis-py or kombu's connection error)
        sched.app.send_task("t", producer=sched.producer, retry=False)
    assert time.monotonic() - started < 2.0

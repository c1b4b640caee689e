"""The health server binds the address ``singleton_beat_health_host`` names."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.testing import RedisServer


def scheduler(master: RedisServer, **settings: object) -> Scheduler:
    app = Celery("health-tests", broker="memory://")
    app.conf.update(
        singleton_beat_redis_urls=[master.url], singleton_beat_health_port=0, **settings
    )
    return Scheduler(app=app)


def test_the_health_server_binds_every_ipv4_interface_by_default(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> None:
    sched = scheduler(redis_cluster(1)[0])
    try:
        assert sched._health is not None
        assert sched._health._server.server_address[0] == "0.0.0.0"
        url = f"http://127.0.0.1:{sched._health.port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200
    finally:
        sched.close()


def test_the_health_server_binds_only_the_configured_host(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> None:
    sched = scheduler(redis_cluster(1)[0], singleton_beat_health_host="127.0.0.1")
    try:
        assert sched._health is not None
        assert sched._health._server.server_address == ("127.0.0.1", sched._health.port)
    finally:
        sched.close()


def test_a_host_that_is_not_this_machines_is_refused_at_start(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        scheduler(redis_cluster(1)[0], singleton_beat_health_host="192.0.2.1")
    assert str(raised.value) == (
        "singleton_beat_health_host/singleton_beat_health_port = '192.0.2.1:0' is not valid: "
        "an address of this host and a free port (Cannot assign requested address)."
    )

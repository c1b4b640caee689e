"""Beat on a plain Redis URL whose server changes on failover: an endpoint that moves to
the promoted replica (as a cloud provider's DNS name does), and a URL of the old
primary's own address, which never becomes the primary again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from celery_singleton_beat.testing import (
    RedisServer,
    TcpProxy,
    free_port,
    http_status,
    sentinel_group,
    wait_for,
)
from tests.support.clusters import FAST, beat_cluster
from tests.support.demotion import write_attempts
from tests.support.failover import LAGGED, SCHEDULE, through_failover

pytestmark = pytest.mark.slow


def test_an_endpoint_that_moves_to_the_promoted_replica_sends_every_slot_once(
    tmp_path: Path,
) -> None:
    """Writes lost at the kill (the replica lagged 2.5 s), two of the three beat
    replicas killed with the primary and two fresh ones started during the failover;
    the endpoint moves once the Sentinels promoted the replica."""
    with sentinel_group() as group:
        proxy = TcpProxy(group.primary().port)
        try:

            def move(promoted: RedisServer) -> None:
                proxy.retarget(promoted.port)

            through_failover(tmp_path, group, proxy, **LAGGED, moved=move).check()
        finally:
            proxy.close()


def test_the_old_primarys_address_is_never_published_to_once_it_is_not_the_primary(
    tmp_path: Path,
) -> None:
    """Beat on the primary's own address. The primary is killed and comes back empty on
    the same port, a primary with nothing in it for ~10 s until the Sentinels make it a
    replica of the promoted one: beat sends it no write (none ran on it, none was
    refused; it has no key the promoted one has not), publishes nothing, keeps ticking (healthz
    200), reports not ready (readyz 503), and no beat process exits."""
    with sentinel_group() as group:
        primary = group.primary()
        port = free_port()
        with beat_cluster(tmp_path, [primary], SCHEDULE, **FAST) as cluster:
            cluster.start_worker()
            replicas = [
                cluster.start_replica("r1", settings={"singleton_beat_health_port": port}),
                cluster.start_replica("r2"),
            ]
            wait_for(lambda: len(cluster.executions()) >= 3, 60, "first executions")
            killed = time.time()
            primary.kill()
            promoted = group.wait_for_failover(primary)
            primary.start()  # empty, a primary until the Sentinels demote it
            time.sleep(5)
            wait_for(
                lambda: primary.client().info("replication").get("master_link_status") == "up",
                60,
                "the Sentinels make the old primary a replica, in step",
            )
            statuses = (http_status(port, "/healthz"), http_status(port, "/readyz"))
            time.sleep(1)
            after = [r for r in cluster.executions() if r["at"] > killed + 0.5]
            exited = [p.name for p in replicas if not p.alive()]
            written = write_attempts(primary)
            kept = set(promoted.client().keys())  # before the replica's: a key may expire
            foreign = sorted(set(primary.client().keys()) - kept)
    assert (after, exited, statuses, written, foreign) == ([], [], (200, 503), {}, [])

"""A plain URL's primary made a replica under live connections (``REPLICAOF host port``):
the connections stay open and each write on them is answered ``READONLY``. The server is
"not the primary": nothing more is sent to it to write, the lock and beat fail closed,
and both come back by themselves once it is the primary again (``REPLICAOF NO ONE``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_singleton_beat.errors import QuorumUnavailable
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.testing import RedisServer, free_port, http_status, wait_for
from tests.support.clusters import FAST, beat_cluster
from tests.support.demotion import demote, promote, refused_writes, write_attempts


@pytest.fixture
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary the client is pointed at, and the server it is made a replica of."""
    servers = [RedisServer().start(), RedisServer().start()]
    try:
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def test_a_lock_on_a_primary_made_a_replica_under_it_fails_closed_and_writes_nothing_more(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    """The first write on the live connection is refused (``READONLY``); the connection is
    dropped, and every new one finds a replica: no write is sent there any more (each
    failed attempt's release script runs there, and deletes nothing), and the lock
    counts again once the server is the primary again."""
    primary, other = pair
    lock = Redlock.from_urls([primary.url], node_timeout=0.2)
    lease = lock.acquire("held", ttl=10)
    assert lease is not None
    demote(primary, other)
    with pytest.raises(QuorumUnavailable, match="ReadOnlyError"):
        lock.acquire("first", ttl=5)
    refused = refused_writes(primary)
    outcomes = []
    for key in ("a", "b", "c"):
        with pytest.raises(QuorumUnavailable, match="is a slave, not the primary") as error:
            lock.acquire(key, ttl=5)
        outcomes.append(type(error.value).__name__)
    outcomes += [lock.extend(lease, ttl=10), lock.release(lease)]
    assert (outcomes, refused_writes(primary) - refused) == (
        ["QuorumUnavailable"] * 3 + [False, False],
        {},
    )
    assert primary.client().keys("*") == []
    promote(primary)
    assert lock.acquire("again", ttl=5) is not None


@pytest.mark.slow
def test_beat_on_a_primary_made_a_replica_under_it_fails_closed_and_comes_back_by_itself(
    tmp_path: Path, pair: tuple[RedisServer, RedisServer]
) -> None:
    """One beat replica on the primary's URL, demoted for 5 s: not a write reaches it
    after the first refused batch, nothing is published, /healthz 200 and /readyz 503,
    one line when it stops and one when it is back; published again within 5 s of the
    promotion, and the process never exits."""
    primary, other = pair
    port = free_port()
    with beat_cluster(tmp_path, [primary], {"one": {"every": 1}}, **FAST) as cluster:
        cluster.start_worker()
        beat = cluster.start_replica("r1", settings={"singleton_beat_health_port": port})
        wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
        demote(primary, other)
        demoted = time.time()
        time.sleep(1.5)  # beat's next rounds meet READONLY, then the refused check
        attempts = write_attempts(primary)
        time.sleep(3.5)
        statuses = (http_status(port, "/healthz"), http_status(port, "/readyz"))
        writes = write_attempts(primary) - attempts
        published = [r for r in cluster.executions() if r["at"] > demoted + 1]
        promoted = promote(primary)
        wait_for(
            lambda: any(r["at"] > promoted for r in cluster.executions()), 5, "published again"
        )
        back = min(r["at"] for r in cluster.executions() if r["at"] > promoted) - promoted
        alive = beat.alive()
        log = beat.text()
    print(f"published again {back:.2f} s after the promotion")
    assert (statuses, writes, published, alive) == ((200, 503), {}, [], True)
    lines = [line for line in log.splitlines() if "majority of Redis masters" in line]
    assert [line.split("] ", 1)[1].split(", publishing")[0] for line in lines] == [
        "singleton beat: no majority of Redis masters reachable",
        "singleton beat: a majority of Redis masters answers again",
    ]
    assert "Traceback" not in log

"""Three beat replicas on PostgreSQL through SQLAlchemy, RabbitMQ as the broker, no Redis
anywhere: killed, paused, crashed between publish and done, cut off from the database.
Each slot in the observed window is executed once, or counted as missed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from celery_singleton_beat.stores.sqlalchemy import SqlAlchemySlotStore
from celery_singleton_beat.testing import TcpProxy, wait_for
from tests.support.clusters import FAST, check_exactly_once, executed_slots, slot_ms
from tests.support.databases import SqlAlchemyDatabases
from tests.support.sqlalchemy_cluster import SqlBeatCluster, sqlalchemy_beat_cluster

pytestmark = pytest.mark.slow

TWO_ENTRIES = {"one": {"every": 1}, "two": {"every": 2}}
RABBITMQ_PORT = 5672


@pytest.fixture
def postgresql(sqlalchemy_databases: SqlAlchemyDatabases, tmp_path: Path) -> Iterator[str]:
    """The URL of the test's PostgreSQL database, with the library's tables."""
    url = sqlalchemy_databases.url("postgresql", tmp_path)
    yield url
    sqlalchemy_databases.empty(url)


def database_port(url: str) -> int:
    return int(sa.make_url(url).port or 5432)


def counts(url: str, entry: str) -> dict[str, int]:
    store = SqlAlchemySlotStore(url)
    try:
        return store.entry_counts(entry)
    finally:
        store.close()


def start(cluster: SqlBeatCluster, *names: str) -> None:
    cluster.start_worker()
    for name in names:
        cluster.start_replica(name)
    wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")


def test_killed_and_paused_replicas_on_postgresql_and_rabbitmq_run_each_slot_once_without_redis(
    postgresql: str, tmp_path: Path
) -> None:
    # no share-out: a replica started again claims every slot, and sends some of them
    racing = {**FAST, "singleton_beat_share_grace": 0}
    with sqlalchemy_beat_cluster(tmp_path, postgresql, TWO_ENTRIES, **racing) as cluster:
        start(cluster, "r1", "r2", "r3")
        began = time.time()
        connected = cluster.connected()
        for _ in range(3):  # SIGKILL the replica that sent last, and start it again
            time.sleep(4.5)
            cluster.restart(cluster.replica_of(cluster.executions()[-1]["replica"]))
            connected |= cluster.connected()
        paused = next(p for p in cluster.processes if p.name == "r1")
        paused.signal(19)  # SIGSTOP, past the claim TTL
        time.sleep(3 * FAST["singleton_beat_claim_ttl"])
        paused.signal(18)  # SIGCONT
        time.sleep(6)
        end = time.time() - 1.5
        rows = cluster.executions()
        opened = cluster.opened()
        assert paused.alive()
    check_exactly_once(rows, "one", 1, began, end)
    check_exactly_once(rows, "two", 2, began, end)
    assert len({r["replica"] for r in rows}) >= 3, "replicas started again send too"
    assert counts(postgresql, "one")["dispatched"] == len([r for r in rows if r["entry"] == "one"])
    servers = {database_port(postgresql), RABBITMQ_PORT}
    assert connected == servers, f"connections held to PostgreSQL and RabbitMQ only: {connected}"
    assert {port for _host, port in opened} == {RABBITMQ_PORT}, (
        f"no connection opened from Python to anything but RabbitMQ (no Redis): {opened}"
    )


def test_a_replica_dying_between_publish_and_done_is_covered_and_the_slot_runs_once(
    postgresql: str, tmp_path: Path
) -> None:
    with sqlalchemy_beat_cluster(tmp_path, postgresql, {"two": {"every": 2}}, **FAST) as cluster:
        cluster.start_worker()
        crasher = cluster.start_replica(
            "crasher", scheduler="tests.sqla.app:CrashAfterPublish", TEST_CRASH_ENTRY="two"
        )
        cluster.start_replica("steady")
        wait_for(lambda: not crasher.alive(), 60, f"the crash hook\n{crasher.text()}")
        assert crasher.popen.returncode == 17
        crashed = cluster.replica_id(crasher)
        wait_for(
            lambda: any(r["replica"] != crashed for r in cluster.executions()[-1:]),
            15, "the steady replica to publish again",
        )  # fmt: skip
        time.sleep(3)
        rows = cluster.executions()
        worker = next(p for p in cluster.processes if p.name == "worker").text()
    lost_slot = max(slot_ms(r["slot"]) for r in rows if r["replica"] == crashed)
    duplicated = [s for s, n in executed_slots(rows, "two").items() if n > 1]
    assert duplicated == [], f"slots executed twice: {duplicated}"
    # the slot the crasher sent before dying was sent again, with the same task id, and
    # the worker dropped the second copy (its "ran" mark is in the database)
    assert worker.count("Ignoring task") + worker.count("already ran") >= 1, worker[-3000:]
    assert lost_slot in executed_slots(rows, "two")


def test_the_database_unreachable_for_10_s_publishes_nothing_twice_and_counts_every_slot(
    postgresql: str, tmp_path: Path
) -> None:
    proxy = TcpProxy(database_port(postgresql))
    through = sa.make_url(postgresql).set(port=proxy.port).render_as_string(hide_password=False)
    try:
        with sqlalchemy_beat_cluster(
            tmp_path, postgresql, {"one": {"every": 1}}, replicas_url=through, **FAST
        ) as cluster:
            start(cluster, "r1", "r2", "r3")
            proxy.cut()
            cut = time.time()
            time.sleep(10)
            proxy.restore()
            wait_for(lambda: cluster.executions()[-1]["at"] > cut + 10, 20, "sending again")
            time.sleep(3)
            replicas = [p for p in cluster.processes if p.name.startswith("r")]
            for replica in replicas:
                cluster.kill(replica)
            # the worker's slot checks failed while the database was away: those runs
            # were retried (fail_closed); every message sent runs, once
            sent = counts(postgresql, "one")["dispatched"]
            wait_for(lambda: len(cluster.executions()) == sent, 30, f"{sent} executions")
            rows = cluster.executions()
            logs = [p.text() for p in replicas]
    finally:
        proxy.close()
    executed = executed_slots(rows, "one")
    assert [s for s, n in executed.items() if n > 1] == [], "no slot executed twice"
    state = counts(postgresql, "one")
    first = min(executed)
    handled = (state["last"] - first) // 1000 + 1
    assert state["dispatched"] + state["skipped"] == handled, (state, first, handled)
    assert state["skipped"] >= 8, "the slots of the outage are counted as missed"
    for log in logs:
        assert log.count("the database does not answer") == 1, log[-3000:]
        assert log.count("the database answers again") == 1, log[-3000:]

"""Beat replicas on the PostgreSQL slot store when the database goes away: real replicas,
a real worker, PostgreSQL behind a TCP proxy that the test cuts (no Redis master)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from celery_singleton_beat.testing import TcpProxy, free_port, http_status, wait_for
from tests.support.clusters import FAST, beat_cluster, executed_slots

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, databases=["postgres"])]

SCHEDULE = {
    "one": {"every": 1},
    "skip": {"every": 1, "options": {"singleton_beat": {"misfire": "skip"}}},
}


def database_behind(proxy: TcpProxy) -> dict[str, Any]:
    from django.db import connections

    given = connections["postgres"].settings_dict
    keys = ("ENGINE", "NAME", "USER", "PASSWORD")
    return {**{k: given[k] for k in keys}, "HOST": "127.0.0.1", "PORT": str(proxy.port)}


def counts(entry: str) -> dict[str, int]:
    from django_celery_singleton_beat.stores import DatabaseSlotStore

    return DatabaseSlotStore("postgres").entry_counts(entry)


def test_the_database_down_for_10_s_stops_publishing_and_beat_recovers_by_itself(
    tmp_path: Path,
) -> None:
    from django.db import connections

    proxy = TcpProxy(int(connections["postgres"].settings_dict["PORT"] or 5432))
    ports = [free_port(), free_port()]
    try:
        with beat_cluster(tmp_path, database_behind(proxy), SCHEDULE, **FAST) as cluster:
            cluster.start_worker()
            replicas = [
                cluster.start_replica(f"r{i}", settings={"singleton_beat_health_port": port})
                for i, port in enumerate(ports)
            ]
            wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
            for port in ports:
                wait_for(lambda p=port: http_status(p, "/readyz") == 200, 10, "/readyz 200")
            before_cut = counts("skip").get("skipped", 0)
            proxy.cut()
            cut = time.time()
            for port in ports:
                wait_for(lambda p=port: http_status(p, "/readyz") == 503, 10, "/readyz 503")
                assert http_status(port, "/healthz") == 200, "the loop is alive, only not ready"
            time.sleep(1.5)
            published = len(cluster.executions())
            time.sleep(max(0.0, cut + 10 - time.time()))
            assert len(cluster.executions()) == published, "nothing is published meanwhile"
            proxy.restore()
            restored = time.time()
            for port in ports:
                wait_for(lambda p=port: http_status(p, "/readyz") == 200, 15, "/readyz again")
            time.sleep(5)
            rows = cluster.executions()
            logs = [r.text() for r in replicas]
    finally:
        proxy.close()
    one = executed_slots(rows, "one")
    assert [s for s, n in one.items() if n > 1] == [], "no slot runs twice"
    assert any(r["at"] > restored for r in rows), "dispatch resumes by itself"
    in_outage = [s for s in one if cut * 1000 + 2_000 <= s <= restored * 1000 - 1_000]
    assert len(in_outage) <= 1, "coalesce fires at most the newest missed slot"
    assert counts("one")["skipped"] >= 7, "the coalesced slots are counted"
    assert counts("skip")["skipped"] - before_cut >= 8, "the skip entry counts every miss"
    for log in logs:
        assert log.count("the database does not answer, publishing nothing") == 1
        assert log.count("the database answers again") == 1


def test_status_reads_replicas_and_entries_through_the_database_store(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from django.db import connections

    proxy = TcpProxy(int(connections["postgres"].settings_dict["PORT"] or 5432))

    def status(cluster: Any) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "tests.beat.app", "singleton-beat",
             "status", "--json"],
            cwd=cluster.workdir, env=cluster.env(), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout)

    try:
        with beat_cluster(tmp_path, database_behind(proxy), SCHEDULE, **FAST) as cluster:
            cluster.start_worker()
            replicas = [cluster.start_replica(f"r{i}") for i in range(2)]
            wait_for(lambda: len(cluster.executions()) >= 4, 30, "first executions")
            code, data = status(cluster)
            assert code == 0, data
            assert data["health"] == "healthy"
            assert "postgresql database" in data["store"]
            assert sorted(r["pid"] for r in data["replicas"]) == sorted(
                r.popen.pid for r in replicas
            )
            assert all(0 <= r["seen_ago"] < 5 for r in data["replicas"])
            entries = {e["name"]: e for e in data["entries"]}
            assert entries["one"]["dispatched"] >= 1
            assert entries["one"]["last_slot"] is not None
            proxy.cut()
            code, data = status(cluster)
            assert code == 2
            assert data["health"] == "store unavailable"  # a database has no quorum to lose
            assert any("database" in problem for problem in data["problems"])
            one = {e["name"]: e for e in data["entries"]}["one"]
            assert (one["last_slot"], one["dispatched"]) == (None, None)  # unknown, not 0
    finally:
        proxy.close()


def test_an_entry_failing_three_times_pauses_itself_on_the_database_store(
    tmp_path: Path,
) -> None:
    import redis
    from django.db import connections

    from celery_singleton_beat.sources.schedule_document import ScheduleDocument
    from django_celery_singleton_beat.stores import DatabaseSlotStore

    flaky = {"flaky": {"every": 1, "task": "fail",
                       "options": {"singleton_beat": {"pause_on_failure": 3}}}}  # fmt: skip
    document = ScheduleDocument(DatabaseSlotStore("postgres"))
    proxy = TcpProxy(int(connections["postgres"].settings_dict["PORT"] or 5432))
    try:
        with beat_cluster(tmp_path, database_behind(proxy), flaky, **FAST) as cluster:
            assert cluster.broker is not None
            redis.Redis.from_url(cluster.broker.url).set("failing", 1)
            cluster.start_worker()
            cluster.start_replica("r1")
            wait_for(lambda: "flaky" in document.read()[1]["paused"], 40, "the entry paused")
            time.sleep(3)  # what was sent before the pause was seen has run
            ran = len(cluster.executions())
            time.sleep(3)
            assert len(cluster.executions()) == ran
            pause = document.read()[1]["paused"]["flaky"]
    finally:
        proxy.close()
    assert pause["by"] == "pause_on_failure"
    assert pause["reason"].startswith("3 consecutive failed runs, the last of slot ")

"""The demo project with real beat replicas and workers: what lands in the database.

Processes run examples/django_project against this test's own redis-server and its own
PostgreSQL database (made by pytest-django); the test reads the rows they write.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.db import connections

from celery_singleton_beat.core.slots import slot_task_id
from celery_singleton_beat.testing import CeleryCluster, RedisServer, TcpProxy, wait_for
from django_celery_singleton_beat.models import SlotDispatch, TaskRun
from tests.djangoapp.project import project_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, databases=["postgres"])]


@pytest.fixture
def redis(redis_cluster: Any) -> RedisServer:
    server: RedisServer = redis_cluster(1)[0]
    return server


@pytest.fixture
def cluster(tmp_path: Path, redis: RedisServer) -> Iterator[CeleryCluster]:
    running = CeleryCluster(tmp_path, "demo_site", project_env(redis, DEMO_LEDGER_RETRY_RATE="1"))
    yield running
    running.stop()


def sender(redis: RedisServer) -> Celery:
    return Celery("sender", broker=f"redis://127.0.0.1:{redis.port}/1", set_as_current=False)


def rows(**filters: Any) -> list[TaskRun]:
    return list(TaskRun.objects.using("postgres").filter(**filters).order_by("id"))


def test_runs_and_slot_decisions_are_recorded_with_their_fields(
    cluster: CeleryCluster, redis: RedisServer
) -> None:
    worker = cluster.start_worker(pool="prefork", concurrency=2)
    replica = cluster.start_replica("beat-1")
    slots = SlotDispatch.objects.using("postgres")

    wait_for(lambda: slots.filter(entry="charge-cards").count() >= 3, 40,
             f"3 recorded charge-cards slots\n{replica.text()}\n{worker.text()}")  # fmt: skip
    decision = slots.filter(entry="charge-cards").order_by("slot").first()
    assert decision is not None
    assert decision.outcome == "dispatched" and decision.publishes == 1
    assert decision.replica == cluster.replica_id(replica)
    assert decision.task_name == "billing.charge_cards"
    assert decision.task_id == slot_task_id("charge-cards", int(decision.slot.timestamp() * 1000))

    wait_for(lambda: rows(task_id=decision.task_id, status="success"), 20,
             f"the run of {decision.task_id}\n{worker.text()}")  # fmt: skip
    (ran,) = rows(task_id=decision.task_id)
    assert ran.task_name == "billing.charge_cards"
    assert ran.entry == "charge-cards" and ran.slot == decision.slot
    assert ran.attempt == 0 and ran.node.startswith("worker@") and ran.pid
    assert ran.pid != worker.popen.pid, "recorded by the pool process that ran it"
    assert ran.lock_key.startswith("task:billing.charge_cards")
    assert ran.fence is not None and ran.fence >= 1
    assert ran.lock_wait is not None and ran.lock_wait >= 0
    assert ran.runtime is not None and 0.2 <= ran.runtime < 5
    assert ran.finished_at is not None and ran.finished_at > ran.started_at
    assert ran.result == "'charged'"

    # a retry: the first attempt retries (DEMO_LEDGER_RETRY_RATE=1), the second succeeds
    wait_for(lambda: rows(entry="sync-ledger", attempt=1, status="success"), 30,
             f"a retried sync-ledger run\n{worker.text()}")  # fmt: skip
    second = rows(entry="sync-ledger", attempt=1, status="success")[0]
    attempts = rows(task_id=second.task_id)
    assert [(r.attempt, r.status) for r in attempts] == [(0, "retry"), (1, "success")]
    assert "ledger busy" in attempts[0].exception

    # a duplicate: two requests for one account while the first runs
    app = sender(redis)
    first = app.send_task("billing.reconcile_account", args=[7, 3.0])
    copy = app.send_task("billing.reconcile_account", args=[7, 3.0])
    wait_for(lambda: len(rows(task_id__in=[first.id, copy.id])) == 2
             and all(r.status != "started" for r in rows(task_id__in=[first.id, copy.id])),
             20, f"both reconcile copies recorded\n{worker.text()}")  # fmt: skip
    statuses = {r.status: r for r in rows(task_id__in=[first.id, copy.id])}
    assert set(statuses) == {"success", "skipped_duplicate"}
    skipped = statuses["skipped_duplicate"]
    holder = statuses["success"]
    # who held the lock, as `locks` names it: never the lock's token
    assert skipped.holder == f"{socket.gethostname()}/{holder.pid}/{holder.task_id}"
    assert skipped.lock_key == holder.lock_key
    assert skipped.args_preview == "7, 3.0"
    assert skipped.args_hash == statuses["success"].args_hash

    # a revoked message: the worker drops it on arrival and says so
    revoked_id = "revoked-before-it-ran"
    app.control.revoke(revoked_id)
    wait_for(lambda: "revoke" in worker.text().lower(), 10, f"the revoke\n{worker.text()}")
    app.send_task("billing.reconcile_account", args=[8, 0.1], task_id=revoked_id)
    wait_for(lambda: rows(task_id=revoked_id), 20, f"the revoked row\n{worker.text()}")
    (revoked,) = rows(task_id=revoked_id)
    assert revoked.status == "revoked" and revoked.task_name == "billing.reconcile_account"
    assert revoked.runtime is None


def test_tasks_keep_running_while_the_database_is_away_and_rows_resume(
    tmp_path: Path, redis: RedisServer
) -> None:
    db_port = int(connections["postgres"].settings_dict["PORT"])
    proxy = TcpProxy(db_port)
    cluster = CeleryCluster(tmp_path, "demo_site", project_env(redis, str(proxy.port)))
    try:
        worker = cluster.start_worker(pool="prefork", concurrency=1)
        app = sender(redis)
        before = [app.send_task("billing.reconcile_account", args=[i, 0.05]).id for i in range(3)]
        wait_for(lambda: len(rows(task_id__in=before, status="success")) == 3, 20,
                 f"rows before the outage\n{worker.text()}")  # fmt: skip

        proxy.cut()
        during = [
            app.send_task("billing.reconcile_account", args=[i, 0.05]).id for i in range(10, 14)
        ]
        wait_for(lambda: all(f"{t}] succeeded" in worker.text() for t in during), 20,
                 f"tasks succeed while the database is away\n{worker.text()}")  # fmt: skip
        wait_for(lambda: worker.text().count("recording paused") >= 1, 10, "the pause logged")
        time.sleep(3)  # the writer retries several times meanwhile
        assert worker.text().count("recording paused") == 1, worker.text()
        assert rows(task_id__in=during) == []

        proxy.restore()
        wait_for(lambda: len(rows(task_id__in=during, status="success")) == 4, 30,
                 f"the rows recorded during the outage\n{worker.text()}")  # fmt: skip
        wait_for(lambda: "recording resumed" in worker.text(), 10, "the resume logged")
        assert worker.text().count("recording paused") == 1
        assert "dropped" not in worker.text().split("recording resumed")[1].split("\n")[0]
    finally:
        cluster.stop()
        proxy.close()


def test_describe_shows_the_lock_ttl_beside_the_longest_recorded_runtime(
    redis: RedisServer,
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    for i, runtime in enumerate([1.5, 27.25, 3.0]):
        TaskRun.objects.using("postgres").create(
            task_id=f"t{i}", task_name="billing.charge_cards", entry="charge-cards",
            status="success", started_at=now, runtime=runtime,
        )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "demo_site", "singleton-beat", "describe",
         "charge-cards", "--count", "1"],
        env={**os.environ, **project_env(redis)}, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "lock TTL 30s" in result.stdout
    assert "longest recorded runtime 27.250s" in result.stdout
    assert "runs reach 91% of the lock TTL" in result.stderr

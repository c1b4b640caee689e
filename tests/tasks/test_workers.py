"""SingletonTask on real workers and real Redis masters, on every release path."""

from __future__ import annotations

import itertools
import json
import socket
import time
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.testing import wait_for
from tests.support.clusters import TASK_APP as APP
from tests.support.clusters import TaskCluster

pytestmark = pytest.mark.slow


def lock_key(cluster: TaskCluster, task: str) -> str:
    wait_for(lambda: cluster.events("RunStarted", task), 20, f"{task} to start")
    return str(cluster.events("RunStarted", task)[0]["key"])


def test_two_prefork_workers_never_run_one_key_at_once_and_report_every_skip(
    cluster: TaskCluster,
) -> None:
    cluster.start_worker("w1", pool="prefork", concurrency=2)
    cluster.start_worker("w2", pool="prefork", concurrency=2)
    for _ in range(20):
        cluster.send("slow", 1.0)

    def settled() -> bool:
        return len(cluster.runs("slow")) + len(cluster.events("RunSkipped", "slow")) == 20

    wait_for(settled, 60, "20 messages to run or be skipped")
    runs = sorted((r["start"], r["end"]) for r in cluster.runs("slow"))
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(runs)), runs
    skipped = cluster.events("RunSkipped", "slow")
    assert len(runs) >= 1
    assert len(skipped) >= 3, "four processes take messages at once: at least three skip"
    assert len(skipped) == 20 - len(runs)
    assert {s["reason"] for s in skipped} == {"skipped_duplicate"}
    assert all(s["holder"] for s in skipped), "a skip names who held the lock"


@pytest.mark.parametrize(("task", "second_copy_runs"), [("retries_releasing", True),
                                                         ("retries_keeping", False)])  # fmt: skip
def test_a_retry_is_not_its_own_duplicate_and_keeps_or_releases_the_lock(
    cluster: TaskCluster, task: str, second_copy_runs: bool
) -> None:
    cluster.start_worker()
    first = cluster.send(task)
    wait_for(lambda: cluster.runs(task), 20, "the first attempt")
    cluster.send(task)  # another copy arrives while the retry waits for its countdown
    wait_for(lambda: any(r["retries"] == 1 for r in cluster.runs(task)), 20, "the retry")
    time.sleep(1.0)
    attempts = [r for r in cluster.runs(task) if r["task_id"] == first]
    assert [a["retries"] for a in attempts] == [0, 1], "the retry ran"
    others = [r for r in cluster.runs(task) if r["task_id"] != first]
    assert bool(others) is second_copy_runs
    finished = [e["status"] for e in cluster.events("RunFinished", task) if e["task_id"] == first]
    assert finished == ["retry", "success"]
    assert cluster.lock().holder(lock_key(cluster, task)) is None, "released after success"


def test_a_killed_worker_frees_the_lock_within_its_ttl_and_the_next_run_proceeds(
    cluster: TaskCluster,
) -> None:
    worker = cluster.start_worker()
    cluster.send("until_killed", 60)
    key = lock_key(cluster, "until_killed")
    cluster.kill(worker)
    killed = time.monotonic()
    lock = cluster.lock()
    wait_for(lambda: lock.holder(key) is None, 10, "the lock to expire")
    assert time.monotonic() - killed <= 2.0 + 0.5
    cluster.start_worker("worker-2")
    cluster.send("until_killed", 0.1)
    wait_for(
        lambda: any(r.get("phase") == "finished" for r in cluster.runs("until_killed")),
        20, "the next run",
    )  # fmt: skip


def test_a_task_running_four_times_its_ttl_keeps_the_lock(cluster: TaskCluster) -> None:
    cluster.start_worker()
    first = cluster.send("outlives_ttl", 4.0)
    key = lock_key(cluster, "outlives_ttl")
    holder = cluster.lock().holder(key) or ""
    assert holder.endswith(f"/{first}"), "the lock names the task id holding it"
    time.sleep(2.0)
    cluster.send("outlives_ttl", 4.0)  # the same key while the first still runs
    wait_for(lambda: cluster.runs("outlives_ttl"), 20, "the long run to end")
    wait_for(lambda: cluster.events("RunSkipped", "outlives_ttl"), 10, "the copy to be skipped")
    (run,) = cluster.runs("outlives_ttl")
    assert run["end"] - run["start"] >= 4.0
    assert run["remaining"] > 0 and run["lost"] is False
    assert cluster.events("LockLost") == []
    assert cluster.lock().holder(key) is None


def test_losing_the_masters_mid_run_marks_the_lease_lost_and_records_it(
    cluster: TaskCluster,
) -> None:
    cluster.start_worker()
    cluster.send("watches_its_lease", 20)
    lock_key(cluster, "watches_its_lease")
    cluster.masters[0].kill()
    cluster.masters[1].kill()
    wait_for(
        lambda: any(r.get("phase") == "finished" for r in cluster.runs("watches_its_lease")),
        10, "the body to see its lease lost",
    )  # fmt: skip
    finished = [r for r in cluster.runs("watches_its_lease") if r.get("phase") == "finished"]
    assert finished[0]["lost"] is True
    wait_for(lambda: cluster.events("RunFinished", "watches_its_lease"), 10, "the record")
    assert len(cluster.events("LockLost", "watches_its_lease")) == 1
    assert cluster.events("RunFinished", "watches_its_lease")[0]["status"] == "lock_lost"


def test_the_soft_time_limit_releases_the_lock(cluster: TaskCluster) -> None:
    cluster.start_worker(pool="prefork", concurrency=1)
    cluster.send("over_time")
    key = lock_key(cluster, "over_time")
    wait_for(lambda: cluster.events("RunFinished", "over_time"), 20, "the soft limit")
    assert cluster.events("RunFinished", "over_time")[0]["status"] == "failure"
    assert "SoftTimeLimitExceeded" in cluster.events("RunFinished", "over_time")[0]["error"]
    assert cluster.lock().holder(key) is None


def test_fail_closed_does_not_run_without_the_lock_store_and_runs_once_it_is_back(
    cluster: TaskCluster,
) -> None:
    worker = cluster.start_worker()
    cluster.masters[0].kill()
    cluster.masters[1].kill()
    cluster.send("waits_for_the_lock_store")
    wait_for(
        lambda: len(cluster.events("RunSkipped", "waits_for_the_lock_store")) >= 2,
        20, "retries while the store is down",
    )  # fmt: skip
    assert cluster.runs("waits_for_the_lock_store") == []
    reasons = {e["reason"] for e in cluster.events("RunSkipped", "waits_for_the_lock_store")}
    assert reasons == {"skipped_lock_error"}
    cluster.masters[0].start()
    cluster.masters[1].start()
    wait_for(lambda: cluster.runs("waits_for_the_lock_store"), 20, "the run once back")
    assert "lock store unreachable" in worker.text()


def test_fail_open_runs_without_the_lock_store_and_says_so(cluster: TaskCluster) -> None:
    worker = cluster.start_worker()
    cluster.masters[0].kill()
    cluster.masters[1].kill()
    cluster.send("runs_anyway")
    wait_for(lambda: cluster.runs("runs_anyway"), 20, "the run")
    assert cluster.runs("runs_anyway")[0]["fence"] is None
    assert "running WITHOUT the lock" in worker.text()
    assert [e["reason"] for e in cluster.events("RunSkipped", "runs_anyway")] == [
        "ran_without_lock"
    ]


def test_the_same_slot_message_delivered_twice_runs_once(cluster: TaskCluster) -> None:
    cluster.start_worker()
    headers = {"singleton_beat_entry": "nightly", "singleton_beat_slot": "2026-11-24T02:30:00.000Z"}
    cluster.send("runs_anyway", task_id="slot-task-id", headers=headers)
    wait_for(lambda: cluster.runs("runs_anyway"), 20, "the first copy")
    cluster.send("runs_anyway", task_id="slot-task-id", headers=headers)
    wait_for(lambda: cluster.events("RunSkipped", "runs_anyway"), 20, "the second copy")
    time.sleep(0.5)
    assert len(cluster.runs("runs_anyway")) == 1
    (skip,) = cluster.events("RunSkipped", "runs_anyway")
    assert (skip["reason"], skip["entry"], skip["slot"]) == (
        "skipped_duplicate", "nightly", "2026-11-24T02:30:00.000Z"
    )  # fmt: skip


def enqueueing_client(cluster: TaskCluster) -> Any:
    """The sender's own definition of queued_once: the enqueue lock is taken by the sender."""
    assert cluster.broker is not None
    client = Celery("enqueuer", broker=cluster.broker.url)
    client.conf.update(
        singleton_beat_redis_urls=[m.url for m in cluster.masters], task_default_queue="task-tests"
    )

    @client.task(name=f"{APP}.queued_once", base=SingletonTask, singleton_enqueue=True, bind=True)
    def queued_once(self: Any, seconds: float) -> None: ...

    return queued_once


def test_enqueue_returns_the_queued_or_running_message_until_it_has_finished(
    cluster: TaskCluster,
) -> None:
    queued_once = enqueueing_client(cluster)
    first = queued_once.delay(2.0)
    assert queued_once.delay(2.0).id == first.id, "pending: the same message"
    cluster.start_worker()
    wait_for(lambda: cluster.runs("queued_once"), 20, "the run to start")
    assert queued_once.delay(2.0).id == first.id, "running: the same message"
    wait_for(lambda: cluster.events("RunFinished", "queued_once"), 20, "the run to finish")
    fresh = queued_once.delay(0.1)
    assert fresh.id != first.id, "finished: a new message is accepted"
    assert (
        queued_once.delay(
            0.1,
        ).id
        == fresh.id
    )


def test_revoking_a_queued_message_releases_its_enqueue_lock(cluster: TaskCluster) -> None:
    queued_once = enqueueing_client(cluster)
    cluster.start_worker()
    first = queued_once.apply_async((0.1,), countdown=2)
    assert queued_once.delay(0.1).id == first.id
    time.sleep(0.5)  # the worker has reserved it, waiting for its countdown
    queued_once.app.control.revoke(first.id)
    wait_for(lambda: queued_once.delay(0.1).id != first.id, 10, "the enqueue lock to go")
    assert not any(r["task_id"] == first.id for r in cluster.runs("queued_once"))


def test_a_plain_task_on_the_slot_aware_base_also_runs_a_slot_once(cluster: TaskCluster) -> None:
    cluster.start_worker()
    headers = {"singleton_beat_entry": "report", "singleton_beat_slot": "2026-11-24T03:00:00.000Z"}
    for _ in range(2):
        cluster.send("plain_but_slot_aware", task_id="report-slot", headers=headers)
    wait_for(lambda: cluster.events("RunSkipped", "plain_but_slot_aware"), 20, "the second copy")
    time.sleep(0.5)
    assert len(cluster.runs("plain_but_slot_aware")) == 1


def test_on_conflict_raise_fails_the_message_with_lock_held(cluster: TaskCluster) -> None:
    worker = cluster.start_worker()
    lock = Redlock.from_urls([m.url for m in cluster.masters])
    assert lock.acquire("task:conflict", ttl=30) is not None
    cluster.send("raises_on_conflict")
    wait_for(lambda: "LockHeld" in worker.text(), 20, "the conflict to be raised")
    assert "lock 'task:conflict' is held by another owner" in worker.text()
    assert cluster.runs("raises_on_conflict") == []


def test_on_conflict_retry_runs_once_the_holder_lets_go(cluster: TaskCluster) -> None:
    cluster.start_worker()
    lock = Redlock.from_urls([m.url for m in cluster.masters])
    lease = lock.acquire("task:conflict", ttl=30)
    assert lease is not None
    cluster.send("retries_on_conflict")
    time.sleep(1.5)
    assert cluster.runs("retries_on_conflict") == [], "not while the key is held"
    lock.release(lease)
    wait_for(lambda: cluster.runs("retries_on_conflict"), 20, "the retried run")
    assert cluster.runs("retries_on_conflict")[0]["retries"] >= 2


def test_a_worker_names_a_lock_holder_by_host_pid_and_task_id_and_never_logs_its_token(
    cluster: TaskCluster,
) -> None:
    """The token a lock is held with is what lets its holder release or extend it: the
    worker's log lines and the events of a skipped run and a dropped slot copy name the
    holder as ``locks`` does (host/pid/task id), and the token appears nowhere."""
    worker = cluster.start_worker(pool="threads", concurrency=2)
    first = cluster.send("slow", 3.0)
    key = lock_key(cluster, "slow")
    token = cluster.lock().holder(key) or ""
    second = cluster.send("slow", 0.1)
    wait_for(lambda: cluster.events("RunSkipped", "slow"), 20, "the second copy to be skipped")
    slot = {"singleton_beat_entry": "nightly", "singleton_beat_slot": "2026-11-24T02:30:00.000Z"}
    cluster.send("runs_anyway", task_id="slot-task-id", headers=slot)
    wait_for(lambda: cluster.runs("runs_anyway"), 20, "the slot's run")
    mark = cluster.lock().holder("ran:nightly:2026-11-24T02:30:00.000Z") or ""
    cluster.send("runs_anyway", task_id="slot-task-id", headers=slot)
    wait_for(lambda: cluster.events("RunSkipped", "runs_anyway"), 20, "the copy to be dropped")
    wait_for(lambda: cluster.runs("slow"), 20, "the first run to end")
    process = f"{socket.gethostname()}/{worker.popen.pid}"
    log = worker.text()
    assert f"{APP}.slow[{second}]: {key!r} is held by {process}/{first}; skipped" in log
    assert (
        f"{APP}.runs_anyway[slot-task-id]: slot 2026-11-24T02:30:00.000Z of 'nightly' "
        f"already ran ({process}); dropping this copy"
    ) in log
    skips = cluster.events("RunSkipped")
    assert sorted(s["holder"] for s in skips) == sorted([f"{process}/{first}", process])
    secrets = [token.partition("@")[0], mark.partition("@")[0]]
    assert all(len(secret) == 32 for secret in secrets), (token, mark)
    published = log + json.dumps(skips)
    assert [s for s in secrets if s in published] == []

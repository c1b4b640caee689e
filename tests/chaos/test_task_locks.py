"""Task locks where the chaos probe found them wrong: odd keys, long-lived fences, a lost
lock store under a slot-aware task."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.tasks.singleton import task_locks
from celery_singleton_beat.testing import CeleryCluster, RedisServer, wait_for
from tests.support.clusters import ROOT, TaskCluster
from tests.support.clusters import TASK_APP as APP

DAY_MS = 86400 * 1000


def by_label_sender(cluster: TaskCluster) -> Any:
    """The sender's definition of queued_by_label: it takes the enqueue lock."""
    assert cluster.broker is not None
    client = Celery("enqueuer", broker=cluster.broker.url)
    client.conf.update(
        singleton_beat_redis_urls=[m.url for m in cluster.masters], task_default_queue="task-tests"
    )

    @client.task(name=f"{APP}.queued_by_label", base=SingletonTask, singleton_key="{label}",
                 singleton_enqueue=True, bind=True)  # fmt: skip
    def queued_by_label(self: Any, label: str) -> None: ...

    return queued_by_label


def test_an_enqueue_lock_whose_key_holds_a_newline_is_released_after_the_run(
    cluster: TaskCluster,
) -> None:
    send = by_label_sender(cluster)
    cluster.start_worker()
    first = send.delay("line one\nline two")
    wait_for(lambda: cluster.runs("queued_by_label"), 20, "the first run")
    lock = cluster.lock()
    wait_for(
        lambda: lock.holder("enqueue:task:line one\nline two") is None, 10,
        "the enqueue lock to be released after the run",
    )  # fmt: skip
    second = send.delay("line one\nline two")
    assert second.id != first.id
    wait_for(lambda: len(cluster.runs("queued_by_label")) == 2, 20, "the second run")
    runs = cluster.runs("queued_by_label")
    assert [(r["task_id"], r["label"]) for r in runs] == [
        (first.id, "line one\nline two"),
        (second.id, "line one\nline two"),
    ]


def test_a_task_lock_fence_counter_is_kept_30_days_so_a_weekly_task_keeps_rising(
    three_masters: list[RedisServer],
) -> None:
    app = Celery("fences", broker="memory://")
    app.conf.singleton_beat_redis_urls = [m.url for m in three_masters]
    _config, backend = task_locks(app)
    fences = []
    for _ in range(2):
        lease = backend.acquire("task:weekly-report", ttl=5)
        assert lease is not None
        fences.append(lease.fence)
        backend.release(lease)
    assert fences == [1, 2]
    for master in three_masters:
        pttl = master.client().pttl("singleton-beat:fence:task:weekly-report")
        assert 30 * DAY_MS - 60_000 < pttl <= 30 * DAY_MS, "kept 30 days, not one"


def test_a_slot_aware_task_is_retried_not_failed_while_the_quorum_is_lost(
    cluster: TaskCluster,
) -> None:
    task = "slot_aware_waits_for_the_lock_store"
    worker = cluster.start_worker()
    cluster.masters[0].kill()
    cluster.masters[1].kill()
    headers = {"singleton_beat_entry": "hourly", "singleton_beat_slot": "2026-11-29T07:00:00.000Z"}
    cluster.send(task, task_id="hourly-slot", headers=headers)
    wait_for(
        lambda: len(cluster.events("RunSkipped", task)) >= 2, 20,
        "retries while the quorum is lost",
    )  # fmt: skip
    assert cluster.runs(task) == []
    skips = cluster.events("RunSkipped", task)
    assert {(s["reason"], s["entry"], s["slot"]) for s in skips} == {
        ("skipped_lock_error", "hourly", "2026-11-29T07:00:00.000Z")
    }
    cluster.masters[0].start()
    cluster.masters[1].start()
    wait_for(lambda: cluster.runs(task), 20, "the run once the quorum is back")
    cluster.send(task, task_id="hourly-slot", headers=headers)  # beat re-publishes the slot
    wait_for(
        lambda: any(s["reason"] == "skipped_duplicate" for s in cluster.events("RunSkipped", task)),
        20, "the re-published copy to be dropped",
    )  # fmt: skip
    assert cluster.runs(task) == [{"task": f"{APP}.{task}", "task_id": "hourly-slot"}]
    assert "slot 2026-11-29T07:00:00.000Z of 'hourly' not run, retrying later" in worker.text()
    assert "raised unexpected" not in worker.text()


def test_locks_and_unlock_see_and_free_a_task_lock_on_separate_task_masters(
    redis_cluster: Callable[[int], list[RedisServer]], tmp_path: Path
) -> None:
    beat_masters, task_masters = redis_cluster(3), redis_cluster(3)
    settings = {"singleton_beat_task_redis_urls": [m.url for m in task_masters]}
    env = {
        **CeleryCluster(tmp_path, APP).env(),
        "PYTHONPATH": str(ROOT),
        "TEST_MASTERS": ",".join(m.url for m in beat_masters),
        "TEST_SETTINGS": json.dumps(settings),
    }
    lock = Redlock.from_urls([m.url for m in task_masters], owner="billing-host/4242")
    lease = lock.acquire("task:stuck", ttl=60)
    assert lease is not None

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", APP, "singleton-beat", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    listed = cli("locks", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [(r["key"], r["holder"], r["fence"], r["store"]) for r in json.loads(listed.stdout)]
    assert rows == [("task:stuck", "billing-host/4242", lease.fence, "task masters")]
    released = cli("unlock", "task:stuck", "--yes")
    assert released.returncode == 0, released.stderr
    assert released.stdout.splitlines() == [
        "beat masters: 'task:stuck' was not held on any of the 3 reachable masters",
        "task masters: released 'task:stuck' on 3 of 3 reachable masters",
    ]
    assert lock.holder("task:stuck") is None
    again = cli("unlock", "task:stuck", "--yes")
    assert again.returncode == 1, "nothing left to release"


def test_a_slot_aware_run_that_waited_for_the_quorum_may_still_retry_itself(
    cluster: TaskCluster,
) -> None:
    task = "slot_aware_retries_once"
    cluster.start_worker()
    cluster.masters[0].kill()
    cluster.masters[1].kill()
    headers = {"singleton_beat_entry": "hourly", "singleton_beat_slot": "2026-11-29T08:00:00.000Z"}
    cluster.send(task, task_id="hourly-8", headers=headers)
    wait_for(lambda: cluster.events("RunSkipped", task), 20, "a retry while the quorum is lost")
    cluster.masters[0].start()
    cluster.masters[1].start()
    wait_for(lambda: len(cluster.runs(task)) == 2, 20, "the run and its own retry")
    first, second = cluster.runs(task)
    assert second["retries"] == first["retries"] + 1
    reasons = {e["reason"] for e in cluster.events("RunSkipped", task)}
    assert reasons == {"skipped_lock_error"}, "the body's own retry is not a duplicate"

"""A beat slot sent again with the same task id runs once for every task of the app, not
only for ``SingletonTask``/``SlotAwareTask``: real workers (prefork and solo pools), real
Redis masters, a Redis broker and result backend, Celery's event stream.

Each test sends a slot's message twice, as beat does when the replica that sent it died
before marking it done: the same task id and the same ``singleton_beat_entry`` and
``singleton_beat_slot`` headers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_singleton_beat.tasks.singleton import ENTRY_HEADER, SKIPPED_EVENT, SLOT_HEADER
from celery_singleton_beat.testing import CeleryCluster, Process, wait_for
from tests.support.clusters import ROOT, TASK_APP, TaskCluster
from tests.support.events import CeleryEvents

pytestmark = pytest.mark.slow

LABEL = "2026-11-24T02:30:00.000Z"
SLOT = {ENTRY_HEADER: "nightly", SLOT_HEADER: LABEL}
MARK = f"ran:nightly:{LABEL}"
TASK_ID = "slot-task-id"


def start_worker(
    cluster: TaskCluster, pool: str = "prefork", settings: dict[str, Any] | None = None
) -> Process:
    """A worker of the task app that stores results and sends Celery's events."""
    given = {"result_backend": cluster.results_url, **(settings or {})}
    return cluster.start_worker(
        pool=pool, concurrency=2, args=("-E",), TEST_SETTINGS=json.dumps(given)
    )


def skips(cluster: TaskCluster, task: str, reason: str = "skipped_duplicate") -> list[Any]:
    return [e for e in cluster.events("RunSkipped", task) if e["reason"] == reason]


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_plain_task_runs_a_slot_sent_twice_once_and_keeps_the_first_runs_result(
    cluster: TaskCluster, pool: str
) -> None:
    assert cluster.broker is not None
    start_worker(cluster, pool)
    result = cluster.result(TASK_ID)
    with CeleryEvents(cluster.broker.url) as seen:
        cluster.send("plain", 1.0, task_id=TASK_ID, headers=SLOT)
        wait_for(lambda: cluster.runs("plain"), 20, "the first copy to run")
        cluster.send("plain", 1.0, task_id=TASK_ID, headers=SLOT)
        wait_for(lambda: skips(cluster, "plain"), 20, "the second copy to be dropped")
        assert result.get(timeout=20) == 1
        wait_for(lambda: len(seen.of(TASK_ID)) >= 5, 10, "the events of both copies")
        time.sleep(1.5)  # a second run, had it started, would have ended and stored by now
    assert [r["number"] for r in cluster.runs("plain")] == [1]
    assert (result.state, result.get()) == ("SUCCESS", 1), "the first run's result stays"
    (skip,) = cluster.events("RunSkipped", "plain")
    assert (skip["task_id"], skip["reason"], skip["key"], skip["entry"], skip["slot"]) == (
        TASK_ID, "skipped_duplicate", MARK, "nightly", LABEL
    )  # fmt: skip
    assert skip["holder"], "a dropped copy names the holder of the slot's mark"
    types = Counter(e["type"] for e in seen.of(TASK_ID))
    assert types == {"task-received": 2, "task-started": 1, "task-succeeded": 1, SKIPPED_EVENT: 1}
    (event,) = [e for e in seen.of(TASK_ID) if e["type"] == SKIPPED_EVENT]
    assert (event["reason"], event["key"], event["entry"], event["slot"], event["task"]) == (
        "skipped_duplicate", MARK, "nightly", LABEL, f"{TASK_APP}.plain"
    )  # fmt: skip


def test_with_the_switch_off_a_slot_sent_twice_runs_twice(cluster: TaskCluster) -> None:
    worker = start_worker(cluster, settings={"singleton_beat_drop_slot_copies": False})
    cluster.send("plain", task_id=TASK_ID, headers=SLOT)
    wait_for(lambda: cluster.runs("plain"), 20, "the first copy to run")
    cluster.send("plain", task_id=TASK_ID, headers=SLOT)
    wait_for(lambda: len(cluster.runs("plain")) == 2, 20, "the second copy to run")
    assert [r["number"] for r in cluster.runs("plain")] == [1, 2]
    assert cluster.events("RunSkipped") == []
    assert "singleton_beat_drop_slot_copies is False" in worker.text()


def test_a_bad_switch_value_stops_the_worker_at_start_naming_the_setting(
    cluster: TaskCluster,
) -> None:
    settings = json.dumps({"singleton_beat_drop_slot_copies": "yes"})
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", TASK_APP, "worker", "-P", "solo",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=cluster.workdir, env=cluster.env(TEST_SETTINGS=settings), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        output = worker.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError(f"the worker started:\n{worker.communicate()[0][-2000:]}") from None
    assert worker.returncode != 0, output
    assert "singleton_beat_drop_slot_copies = 'yes' is not valid: True or False" in output
    assert "ready." not in output


def test_a_task_with_its_own_request_class_keeps_it_and_runs_a_slot_sent_twice_once(
    cluster: TaskCluster,
) -> None:
    start_worker(cluster)
    for _ in range(2):
        cluster.send("audited", task_id=TASK_ID, headers=SLOT)
    wait_for(lambda: skips(cluster, "audited"), 20, "the second copy to be dropped")
    wait_for(lambda: cluster.runs("audited"), 20, "the first copy to run")
    time.sleep(0.5)
    assert cluster.runs("audited") == [{"task": f"{TASK_APP}.audited", "task_id": TASK_ID}]
    (accepted,) = cluster.accepted()  # the dropped copy never reached a pool process
    assert "AuditedRequest" in accepted["classes"], "the task's own request class is kept"


def test_a_slots_retry_runs_and_a_copy_sent_after_it_is_dropped(cluster: TaskCluster) -> None:
    start_worker(cluster, "solo")
    cluster.send("plain_retries_once", task_id=TASK_ID, headers=SLOT)
    assert cluster.result(TASK_ID).get(timeout=20) == 1
    cluster.send("plain_retries_once", task_id=TASK_ID, headers=SLOT)
    wait_for(lambda: skips(cluster, "plain_retries_once"), 20, "the copy to be dropped")
    time.sleep(0.5)
    assert [r["retries"] for r in cluster.runs("plain_retries_once")] == [0, 1]
    assert len(cluster.events("RunSkipped", "plain_retries_once")) == 1


def test_a_slot_whose_lock_store_is_down_is_sent_again_and_runs_once_it_is_back(
    cluster: TaskCluster,
) -> None:
    worker = start_worker(cluster)
    cluster.masters[0].kill()
    cluster.masters[1].kill()
    cluster.send("plain", task_id=TASK_ID, headers=SLOT)
    wait_for(
        lambda: len(skips(cluster, "plain", "skipped_lock_error")) >= 2, 20,
        "the slot to wait for the lock store",
    )  # fmt: skip
    assert cluster.runs("plain") == []
    assert cluster.result(TASK_ID).state == "PENDING", "nothing stored while it waits"
    cluster.masters[0].start()
    cluster.masters[1].start()
    assert cluster.result(TASK_ID).get(timeout=20) == 1
    (run,) = cluster.runs("plain")
    assert (run["task_id"], run["retries"]) == (TASK_ID, 0), "not counted as a retry"
    cluster.send("plain", task_id=TASK_ID, headers=SLOT)  # beat sends the slot again
    wait_for(lambda: skips(cluster, "plain"), 20, "the copy to be dropped")
    assert len(cluster.runs("plain")) == 1
    assert f"slot {LABEL} of 'nightly' not run, retrying later" in worker.text()


def test_fail_open_runs_a_slot_whose_lock_store_is_down_and_says_so(cluster: TaskCluster) -> None:
    worker = start_worker(cluster, settings={"singleton_beat_task_on_lock_error": "fail_open"})
    cluster.masters[0].kill()
    cluster.masters[1].kill()
    cluster.send("plain", task_id=TASK_ID, headers=SLOT)
    assert cluster.result(TASK_ID).get(timeout=20) == 1
    assert [e["reason"] for e in cluster.events("RunSkipped", "plain")] == ["ran_without_lock"]
    assert "WITHOUT checking that it did not run already" in worker.text()


BARE_APP = """\
import os

import redis
from celery import Celery

app = Celery("bare", broker=os.environ["TEST_BROKER_URL"])
app.conf.update(
    beat_scheduler="celery_singleton_beat.Scheduler",
    singleton_beat_redis_urls=os.environ["TEST_MASTERS"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="bare.report")
def report():
    redis.Redis.from_url(os.environ["TEST_BROKER_URL"]).incr("bare_runs")
    return "sent"
"""


def test_the_worker_of_an_app_that_imports_nothing_of_the_library_drops_the_copy(
    cluster: TaskCluster, tmp_path: Path
) -> None:
    """The app only names the scheduler in its settings: ``celery worker`` loads the
    library through its ``celery.commands`` entry point."""
    assert cluster.broker is not None
    (tmp_path / "bare_app.py").write_text(BARE_APP)
    env = {**cluster.base_env, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    bare = CeleryCluster(tmp_path, "bare_app", env, queue="bare")
    try:
        worker = bare.start_worker(pool="prefork", concurrency=2)
        client = Celery("sender", broker=cluster.broker.url)
        for _ in range(2):
            client.send_task("bare.report", task_id=TASK_ID, headers=SLOT, queue="bare")
        wait_for(lambda: "dropping this copy" in worker.text(), 20, "the copy to be dropped")
        time.sleep(0.5)
    finally:
        bare.stop()
    assert redis.Redis.from_url(cluster.broker.url).get("bare_runs") == b"1"
    assert f"slot {LABEL} of 'nightly' already ran" in worker.text()

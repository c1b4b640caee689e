"""What Celery's own tools see of a dropped or skipped copy: no stored result, its own event.

A real worker, a Redis broker and result backend, real lock masters, and a real event
receiver on the broker (what Flower and ``celery events`` read).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from celery import Celery
from celery.events.state import State

from celery_singleton_beat.testing import wait_for
from tests.support.clusters import TASK_APP as APP
from tests.support.clusters import TaskCluster

pytestmark = pytest.mark.slow

SLOT = {"singleton_beat_entry": "nightly", "singleton_beat_slot": "2026-11-24T02:30:00.000Z"}


def backend_url(cluster: TaskCluster) -> str:
    assert cluster.broker is not None
    return f"redis://127.0.0.1:{cluster.broker.port}/1"


def start_worker(cluster: TaskCluster, *args: str) -> None:
    settings = {"result_backend": backend_url(cluster)}
    cluster.start_worker(args=args, TEST_SETTINGS=json.dumps(settings))


def test_a_copy_dropped_while_the_real_run_executes_leaves_the_real_result(
    cluster: TaskCluster,
) -> None:
    assert cluster.broker is not None
    start_worker(cluster, "-E")
    client = Celery("results", broker=cluster.broker.url)
    client.conf.result_backend = backend_url(cluster)
    send = {"task_id": "slot-task-id", "headers": SLOT, "queue": "task-tests"}
    with Events(cluster.broker.url) as seen:
        client.send_task(f"{APP}.nightly_report", (2.0,), **send)
        wait_for(lambda: cluster.runs("nightly_report"), 20, "the real run to start")
        client.send_task(f"{APP}.nightly_report", (2.0,), **send)
        wait_for(
            lambda: cluster.events("RunSkipped", "nightly_report"), 20, "the copy to be dropped"
        )
        result = client.AsyncResult("slot-task-id")
        assert result.get(timeout=20) == {"rows": 42}
        wait_for(
            lambda: any(e["type"] == "task-succeeded" for e in seen.of("slot-task-id")),
            10,
            "the success event",
        )
    assert result.state == "SUCCESS"
    assert len(cluster.runs("nightly_report")) == 1
    ends = [
        e for e in seen.of("slot-task-id") if e["type"] not in ("task-received", "task-started")
    ]
    assert [e["type"] for e in ends] == ["task-singleton-skipped", "task-succeeded"]
    assert (ends[0]["reason"], ends[0]["key"], ends[0]["entry"], ends[0]["slot"]) == (
        "skipped_duplicate", f"ran:nightly:{SLOT['singleton_beat_slot']}", "nightly",
        SLOT["singleton_beat_slot"],
    )  # fmt: skip
    assert ends[1]["result"] == "{'rows': 42}"


class Events:
    """Every Celery event on the broker, received from a thread, as Flower receives them."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("monitor", broker=broker_url)
        self.seen: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self.seen.append})
            self.ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> Events:
        self._thread.start()
        assert self.ready.wait(10)
        time.sleep(0.5)  # the receiver's queue is bound once capture() consumes
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(5)

    def of(self, task_id: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e.get("uuid") == task_id]


def test_a_skipped_singleton_run_is_its_own_event_not_task_succeeded(
    cluster: TaskCluster,
) -> None:
    assert cluster.broker is not None
    start_worker(cluster, "-E")
    with Events(cluster.broker.url) as seen:
        cluster.send("slow", 2.0, task_id="the-real-run")
        wait_for(lambda: cluster.events("RunStarted", "slow"), 20, "the real run to start")
        cluster.send("slow", 2.0, task_id="the-skipped-copy")
        wait_for(
            lambda: any(e["type"] == "task-singleton-skipped" for e in seen.of("the-skipped-copy")),
            20,
            "the task-singleton-skipped event",
        )
        wait_for(
            lambda: any(e["type"] == "task-succeeded" for e in seen.of("the-real-run")),
            20,
            "the real run to succeed",
        )
    skipped = seen.of("the-skipped-copy")
    assert [e["type"] for e in skipped] == [
        "task-received", "task-started", "task-singleton-skipped"
    ]  # fmt: skip
    event = skipped[-1]
    (held,) = cluster.events("RunSkipped", "slow")
    owner = held["holder"]  # who holds it (host/pid/task id), without the lock's token
    assert (event["reason"], event["key"], event["holder"], event["task"]) == (
        "skipped_duplicate", "task:slow", owner, f"{APP}.slow"
    )  # fmt: skip
    assert owner.endswith("/the-real-run") and "@" not in owner
    monitor = State()
    for received in seen.seen:
        monitor.event(received)
    assert monitor.tasks["the-skipped-copy"].state == "SINGLETON-SKIPPED", "as Flower shows it"
    assert monitor.tasks["the-real-run"].state == "SUCCESS"
    client = Celery("results", broker=cluster.broker.url)
    client.conf.result_backend = backend_url(cluster)
    assert client.AsyncResult("the-skipped-copy").state == "PENDING"

"""Singleton and slot-aware tasks in Celery's in-process test worker
(``celery.contrib.testing.worker.start_worker``), on an in-memory lock and broker, on every
supported Celery: the body sees its request and lease, copies are skipped, retries retry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from celery_singleton_beat.observe import events
from celery_singleton_beat.tasks.singleton import ENTRY_HEADER, SLOT_HEADER
from tests.compat.tasks import Tasks, make_app
from tests.support.events import EventLog


@pytest.fixture(scope="module")
def running() -> Iterator[Tasks]:
    made = make_app("in-process", task_default_retry_delay=0)
    with start_worker(made.app, pool="threads", concurrency=2, perform_ping_check=False):
        yield made
        made.gate.set()


@pytest.fixture
def worker(running: Tasks) -> Iterator[Tasks]:
    running.gate, running.entered = threading.Event(), threading.Event()
    running.attempts.clear()
    running.ran.clear()
    yield running
    running.gate.set()


@pytest.fixture
def skipped(event_log: EventLog) -> list[events.RunSkipped]:
    return event_log.of(events.RunSkipped)


def test_a_worker_run_sees_its_task_id_and_a_fenced_lease(worker: Tasks) -> None:
    first = worker.whoami.apply_async(task_id="worker-1").get(timeout=10)
    second = worker.whoami.apply_async(task_id="worker-2").get(timeout=10)
    assert first["key"].startswith("task:in-process.whoami")
    assert first == {"id": "worker-1", "key": first["key"], "fence": first["fence"]}
    assert second == {"id": "worker-2", "key": first["key"], "fence": first["fence"] + 1}


def test_a_second_copy_while_the_first_runs_is_skipped(
    worker: Tasks, skipped: list[events.RunSkipped]
) -> None:
    first = worker.held.apply_async(task_id="held-1")
    assert worker.entered.wait(10), "the first copy started"
    second = worker.held.apply_async(task_id="held-2")
    wait_until(lambda: skipped, "the second copy skipped")
    worker.gate.set()
    assert first.get(timeout=10) == "ran held-1"
    assert [(e.task_id, e.key, e.reason) for e in skipped] == [
        ("held-2", "task:held", "skipped_duplicate")
    ]
    assert second.state == "PENDING", "a skipped copy stores no result (Celery's Ignore)"


def test_a_retry_in_the_worker_runs_the_task_again(worker: Tasks) -> None:
    result = worker.flaky.apply_async(args=(2,), task_id="flaky-w")
    assert result.get(timeout=20) == {"retries": 2, "id": "flaky-w"}
    assert worker.attempts == [0, 1, 2]


def test_a_slot_message_delivered_twice_runs_once_in_the_worker(
    worker: Tasks, skipped: list[events.RunSkipped]
) -> None:
    headers: dict[str, Any] = {ENTRY_HEADER: "nightly", SLOT_HEADER: "2026-06-21T02:00:00.000Z"}
    first = worker.slotted.apply_async(task_id="slot-w1", headers=headers).get(timeout=10)
    again = worker.slotted.apply_async(task_id="slot-w2", headers=headers)
    wait_until(lambda: skipped, "the second delivery dropped")
    assert first == "ran slot-w1"
    assert [(e.task_id, e.reason) for e in skipped] == [("slot-w2", "skipped_duplicate")]
    assert again.state == "PENDING", "a dropped copy stores no result (Celery's Ignore)"


def test_a_message_retried_by_its_body_keeps_its_enqueue_lock_until_it_has_run(
    worker: Tasks,
) -> None:
    first = worker.queued_once.delay()
    deadline = time.monotonic() + 10
    while worker.attempts != [0]:
        assert time.monotonic() < deadline, "the first attempt ran"
        time.sleep(0.01)
    time.sleep(0.5)  # the attempt has ended; its retry waits for its countdown
    again = worker.queued_once.delay()
    assert again.id == first.id, "the retry is still the queued message of the key"
    assert first.get(timeout=10) == first.id
    assert worker.attempts == [0, 1]


def test_a_plain_task_runs_a_slot_sent_twice_once_in_the_worker(
    worker: Tasks, skipped: list[events.RunSkipped]
) -> None:
    headers: dict[str, Any] = {ENTRY_HEADER: "weekly", SLOT_HEADER: "2026-06-21T03:00:00.000Z"}
    first = worker.plain.apply_async(task_id="plain-slot", headers=headers)
    assert first.get(timeout=10) == "ran plain-slot"
    worker.plain.apply_async(task_id="plain-slot", headers=headers)
    wait_until(lambda: skipped, "the second copy dropped")
    assert [(e.task_id, e.reason, e.slot) for e in skipped] == [
        ("plain-slot", "skipped_duplicate", "2026-06-21T03:00:00.000Z")
    ]
    assert worker.ran == ["plain-slot"]
    assert first.get(timeout=10) == "ran plain-slot", "the first run's result stays"


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)

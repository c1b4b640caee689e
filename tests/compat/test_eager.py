"""Singleton and slot-aware tasks under ``task_always_eager``, on every supported Celery,
with no Redis: the body sees its own request, its lease, and Celery's eager retries."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from celery_singleton_beat.observe import events
from celery_singleton_beat.tasks.singleton import ENTRY_HEADER, SLOT_HEADER
from tests.compat.tasks import Tasks, make_app
from tests.support.events import EventLog


@pytest.fixture
def eager() -> Tasks:
    return make_app("eager", task_always_eager=True)


@pytest.fixture
def skipped(event_log: EventLog) -> list[events.RunSkipped]:
    return event_log.of(events.RunSkipped)


def test_an_eager_singleton_task_sees_its_task_id_and_a_fenced_lease(eager: Tasks) -> None:
    first = eager.whoami.apply_async(task_id="eager-1").get()
    second = eager.whoami.delay().get()
    assert first == {"id": "eager-1", "key": first["key"], "fence": 1}
    assert first["key"].startswith("task:eager.whoami")
    assert second["fence"] == 2
    assert second["id"] not in (None, "eager-1")


def test_an_eager_copy_started_while_another_holds_the_key_is_skipped(
    eager: Tasks, skipped: list[events.RunSkipped]
) -> None:
    results: list[Any] = []
    first = threading.Thread(
        target=lambda: results.append(eager.held.apply_async(task_id="first-copy").result)
    )
    first.start()
    assert eager.entered.wait(10)
    # .state: Celery refuses result.get() anywhere in the process while an eager task runs
    second = eager.held.apply_async(task_id="second-copy").state
    eager.gate.set()
    first.join(10)
    assert second == "IGNORED", "a skipped copy stores no result, as on a worker"
    assert [(e.task_id, e.key, e.reason) for e in skipped] == [
        ("second-copy", "task:held", "skipped_duplicate")
    ]
    assert results == ["ran first-copy"]


def test_an_eager_retry_runs_the_task_again_as_celery_does_in_eager_mode(eager: Tasks) -> None:
    """Celery's eager mode applies the retry at once, with ``retries + 1``."""
    result = eager.flaky.apply_async(args=(2,), task_id="flaky-1")
    assert result.get() == {"retries": 2, "id": "flaky-1"}
    assert eager.attempts == [0, 1, 2]


def test_an_eager_retry_past_max_retries_fails_with_max_retries_exceeded(eager: Tasks) -> None:
    from celery.exceptions import MaxRetriesExceededError

    result = eager.flaky.apply_async(args=(10,))
    assert result.state == "FAILURE"
    with pytest.raises(MaxRetriesExceededError):
        result.get()
    assert eager.attempts == [0, 1, 2, 3]


def test_an_eager_slot_aware_task_runs_a_slot_once(
    eager: Tasks, skipped: list[events.RunSkipped]
) -> None:
    headers = {ENTRY_HEADER: "nightly", SLOT_HEADER: "2026-06-21T02:00:00.000Z"}
    first = eager.slotted.apply_async(task_id="slot-1", headers=headers).get()
    again = eager.slotted.apply_async(task_id="slot-2", headers=headers).get()
    assert (first, again) == ("ran slot-1", None)
    assert [(e.task_id, e.reason) for e in skipped] == [("slot-2", "skipped_duplicate")]


def test_with_eager_propagation_a_retry_raises_celerys_retry_carrying_the_next_call(
    eager: Tasks,
) -> None:
    from celery.exceptions import Retry

    eager.app.conf.task_eager_propagates = True
    with pytest.raises(Retry) as raised:
        eager.flaky.apply_async(args=(1,), task_id="flaky-2")
    assert raised.value.sig is not None
    assert raised.value.sig.options["task_id"] == "flaky-2"
    assert raised.value.sig.options["retries"] == 1


def test_an_eager_plain_task_runs_every_copy_of_a_slot(
    eager: Tasks, skipped: list[events.RunSkipped]
) -> None:
    """Eager calls meet no worker request: only singleton and slot-aware tasks drop a
    copy there (a guard: workers drop it for every task)."""
    headers: dict[str, Any] = {ENTRY_HEADER: "weekly", SLOT_HEADER: "2026-06-21T03:00:00.000Z"}
    first = eager.plain.apply_async(task_id="p-1", headers=headers).get()
    again = eager.plain.apply_async(task_id="p-1", headers=headers).get()
    assert (first, again, eager.ran) == ("ran p-1", "ran p-1", ["p-1", "p-1"])
    assert skipped == []

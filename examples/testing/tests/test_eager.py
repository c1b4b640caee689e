"""The tasks run eagerly (``task_always_eager``) on the in-memory lock: no Redis at all."""

import pytest
from shop.celery import app
from shop.tasks import SYNCED, nightly_report, sync_account


@pytest.fixture
def eager(singleton_beat_memory_lock):
    app.conf.task_always_eager = True
    yield singleton_beat_memory_lock
    app.conf.task_always_eager = False


def test_a_sync_runs_holding_its_accounts_lock(eager):
    result = sync_account.apply_async(args=(42,), task_id="first")
    assert result.get() == "synced 42 as first"
    assert SYNCED == [(42, 1)]
    assert eager.holder("task:sync:42") is None, "released when done"


def test_a_second_sync_of_an_account_being_synced_is_skipped(eager):
    running = eager.acquire("task:sync:42", ttl=60)  # a first copy is running
    assert sync_account.delay(42).get() is None
    assert SYNCED == []
    eager.release(running)
    assert sync_account.delay(42).get().startswith("synced 42")
    assert SYNCED == [(42, 2)]


def test_another_account_is_not_blocked(eager):
    eager.acquire("task:sync:42", ttl=60)
    assert sync_account.delay(7).get().startswith("synced 7")


def test_a_nightly_slot_sent_twice_runs_once(eager):
    headers = {"singleton_beat_entry": "nightly", "singleton_beat_slot": "2026-06-21T02:00:00.000Z"}
    assert nightly_report.apply_async(task_id="a", headers=headers).get() == "report a"
    assert nightly_report.apply_async(task_id="b", headers=headers).get() is None

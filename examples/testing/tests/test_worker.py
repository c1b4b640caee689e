"""The tasks run in Celery's in-process worker (``celery_app`` + ``celery_worker``)."""

import time

import pytest
from shop.tasks import DIGESTS, SYNCED, sync_account, weekly_digest

from celery_singleton_beat import events


@pytest.fixture(scope="session")
def celery_worker_pool():
    return "threads"  # two syncs at once, so that one meets the other's lock


@pytest.fixture(scope="session")
def celery_worker_parameters():
    return {"concurrency": 2, "perform_ping_check": False}


@pytest.fixture
def celery_config():
    return {
        "broker_url": "memory://",
        "broker_transport_options": {"polling_interval": 0.05},
        "result_backend": "cache+memory://",
        # as in production: a worker of an app on this scheduler runs each beat slot once
        "beat_scheduler": "celery_singleton_beat.Scheduler",
    }


def wait_until_held(lock, key):
    deadline = time.monotonic() + 10
    while lock.holder(key) is None:
        assert time.monotonic() < deadline, f"{key} was never taken"
        time.sleep(0.01)


def test_a_second_copy_sent_while_the_first_runs_is_skipped(
    singleton_beat_memory_lock, celery_app, celery_worker
):
    first = sync_account.apply_async(args=(42, 3.0), task_id="first")
    wait_until_held(singleton_beat_memory_lock, "task:sync:42")
    second = sync_account.apply_async(args=(42,), task_id="second")
    assert first.get(timeout=10) == "synced 42 as first"
    assert SYNCED == [(42, 1)], "the second copy did not run"
    # a skipped copy stores no result (Celery's Ignore): its state stays PENDING, and
    # Flower or `celery events` show it as task-singleton-skipped
    assert second.state == "PENDING"


def test_a_weekly_slot_that_beat_sends_twice_runs_once(
    singleton_beat_memory_lock, celery_app, celery_worker
):
    dropped = []
    stop = events.subscribe(
        lambda event: dropped.append(event) if isinstance(event, events.RunSkipped) else None
    )
    headers = {"singleton_beat_entry": "weekly", "singleton_beat_slot": "2026-06-21T03:00:00.000Z"}
    try:
        first = weekly_digest.apply_async(task_id="weekly-slot", headers=headers)
        assert first.get(timeout=10) == "digest weekly-slot"
        weekly_digest.apply_async(task_id="weekly-slot", headers=headers)  # sent again
        deadline = time.monotonic() + 10
        while not dropped:
            assert time.monotonic() < deadline, "the second copy was never dropped"
            time.sleep(0.01)
    finally:
        stop()
    assert DIGESTS == ["weekly-slot"], "the second copy did not run"
    assert dropped[0].reason == "skipped_duplicate"
    assert first.get() == "digest weekly-slot", "the first run's result stays"

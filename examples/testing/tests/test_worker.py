"""The tasks run in Celery's in-process worker (``celery_app`` + ``celery_worker``)."""

import time

import pytest
from shop.tasks import SYNCED, sync_account


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

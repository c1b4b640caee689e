"""DatabaseLock beyond the contract: contention, transactions, and backing SingletonTask."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from celery import Celery
from django.db import connections, transaction

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.errors import ConfigurationError, LockError
from celery_singleton_beat.ops.lock_stores import lock_stores
from celery_singleton_beat.tasks.singleton import task_locks
from django_celery_singleton_beat.locks import DatabaseLock
from django_celery_singleton_beat.models import Lock

DATABASES = ["default", "postgres", "mariadb"]
pytestmark = pytest.mark.django_db(transaction=True, databases=DATABASES)


@pytest.mark.parametrize("using", DATABASES)
def test_threads_contending_for_one_key_never_hold_it_together(using: str) -> None:
    lock = DatabaseLock(using=using, retry_delay=0.01)
    holding, overlaps, fences = [0], [], []
    mutex = threading.Lock()

    def contend() -> None:
        try:
            for _ in range(25):
                lease = lock.acquire("shared", ttl=5, wait=10)
                assert lease is not None
                with mutex:
                    holding[0] += 1
                    if holding[0] > 1:
                        overlaps.append(lease.fence)
                    fences.append(lease.fence)
                time.sleep(0.001)
                with mutex:
                    holding[0] -= 1
                assert lock.release(lease) is True
        finally:
            connections[using].close()

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert len(fences) == 150
    assert sorted(fences) == list(range(1, 151)), "every grant got the next fencing token"


@pytest.mark.parametrize("using", DATABASES)
def test_a_call_inside_a_transaction_on_the_same_alias_is_refused(using: str) -> None:
    lock = DatabaseLock(using=using)
    with transaction.atomic(using=using), pytest.raises(LockError, match="inside a transaction"):
        lock.acquire("k", ttl=5)


def test_keys_longer_than_the_column_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 255 characters"):
        DatabaseLock().acquire("k" * 256, ttl=5)


def make_app(**conf: Any) -> Celery:
    app = Celery("dblock", set_as_current=False, broker="memory://")
    app.conf.update(task_always_eager=False, **conf)
    return app


def test_singleton_tasks_run_on_the_database_lock_without_any_redis() -> None:
    app = make_app(singleton_beat_task_backend="django_celery_singleton_beat.locks.DatabaseLock")
    inside = threading.Event()
    release = threading.Event()
    seen: dict[str, Any] = {}

    @app.task(base=SingletonTask, bind=True, singleton_key="job", singleton_ttl=30)
    def job(self: Any) -> str:
        seen["fence"] = self.singleton.fence
        seen["key"], seen["token"] = self.singleton.key, self.singleton.token
        seen["row"] = Lock.objects.get(key=self.singleton.key).token
        inside.set()
        release.wait(10)
        return "done"

    config, backend = task_locks(app)
    assert isinstance(backend, DatabaseLock)
    assert config.redis_urls == ()
    first: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: first.update(result=job.apply().get()))
    runner.start()
    assert inside.wait(10)
    second = job.apply()
    release.set()
    runner.join(10)
    connections["default"].close()
    assert first["result"] == "done"
    assert second.get() is None, "the copy started while the first held the key was skipped"
    assert seen["fence"] >= 1
    assert seen["row"] == seen["token"], "the lock row holds the running task's token"
    assert Lock.objects.get(key=seen["key"]).token == "", "released when the run ended"


def test_a_bad_task_backend_setting_names_it() -> None:
    app = make_app(singleton_beat_task_backend="no.such.Backend")
    with pytest.raises(ConfigurationError, match="singleton_beat_task_backend"):
        task_locks(app)


def test_the_operator_commands_list_and_free_a_task_lock_on_the_database_backend() -> None:
    app = make_app(singleton_beat_task_backend="django_celery_singleton_beat.locks.DatabaseLock")
    (store,) = lock_stores(app)
    lease = DatabaseLock().acquire("task:stuck", ttl=60, token="abc@billing-host/4242")
    assert lease is not None
    rows = [(r["key"], r["holder"], r["fence"], r["store"]) for r in store.held()]
    assert rows == [
        (
            "task:stuck",
            "billing-host/4242",
            lease.fence,
            "task backend database 'default'",
        )
    ]
    assert store.force_release("task:stuck") == (True, "released 'task:stuck'")
    assert DatabaseLock().holder("task:stuck") is None
    assert store.force_release("task:stuck") == (False, "'task:stuck' is not held")

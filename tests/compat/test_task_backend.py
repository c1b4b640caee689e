"""A task given its own lock backend needs no Redis URL in the app's settings."""

from __future__ import annotations

from typing import Any

from celery import Celery

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.locks import MemoryLock


def test_a_task_with_its_own_memory_lock_runs_with_no_redis_urls_configured() -> None:
    app = Celery("own-backend", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = True
    lock = MemoryLock()

    @app.task(bind=True, base=SingletonTask, singleton_backend=lock, singleton_key="own")
    def fenced(self: Any) -> int:
        assert lock.holder("task:own") is not None, "held on the task's own backend"
        return int(self.singleton.fence)

    assert app.conf.get("singleton_beat_redis_urls") is None
    assert [fenced.delay().get(), fenced.delay().get()] == [1, 2]
    assert lock.holder("task:own") is None, "released after each run"


def test_a_held_key_on_a_tasks_own_backend_skips_the_copy() -> None:
    app = Celery("own-backend-held", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = True
    lock = MemoryLock()

    @app.task(bind=True, base=SingletonTask, singleton_backend=lock, singleton_key="busy")
    def busy(self: Any) -> str:
        return "ran"

    holder = lock.acquire("task:busy", ttl=30)
    assert holder is not None
    assert busy.delay().get() is None
    lock.release(holder)
    assert busy.delay().get() == "ran"


def test_overriding_the_lock_backend_with_something_else_is_refused_by_name() -> None:
    import pytest

    from celery_singleton_beat import ConfigurationError
    from celery_singleton_beat.tasks.singleton import override_lock_backend

    with pytest.raises(ConfigurationError) as refused:
        override_lock_backend("redis://127.0.0.1:6379/0").__enter__()  # type: ignore[arg-type]
    assert str(refused.value) == (
        "override_lock_backend(backend) = 'redis://127.0.0.1:6379/0' is not valid: a LockBackend."
    )

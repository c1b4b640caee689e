"""App-wide task settings, and events that cannot fail a task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat import SingletonTask, events
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.settings.config import TaskConfig
from celery_singleton_beat.testing import RedisServer

URLS = ["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7002/0", "redis://127.0.0.1:7003/0"]


def test_task_defaults_come_from_the_app_settings() -> None:
    config = TaskConfig.from_conf(
        {
            "singleton_beat_redis_urls": URLS,
            "singleton_beat_task_redis_urls": "redis://t1:6379/0,redis://t2:6379/0",
            "singleton_beat_task_ttl": 120,
            "singleton_beat_task_on_conflict": "retry",
            "singleton_beat_task_on_lock_error": "fail_open",
        }
    )
    assert config.redis_urls == ("redis://t1:6379/0", "redis://t2:6379/0")
    assert (config.task_ttl, config.task_on_conflict, config.task_on_lock_error) == (
        120, "retry", "fail_open"
    )  # fmt: skip


def test_task_locks_use_the_scheduler_masters_by_default() -> None:
    assert TaskConfig.from_conf({"singleton_beat_redis_urls": URLS}).redis_urls == tuple(URLS)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"singleton_beat_task_on_conflict": "wait"},
         r"singleton_beat_task_on_conflict = 'wait' is not valid: one of 'skip', 'retry', 'raise'"),
        ({"singleton_beat_task_on_lock_error": "ignore"},
         r"singleton_beat_task_on_lock_error = 'ignore' is not valid: one of 'fail_closed'"),
        ({"singleton_beat_task_ttl": 0}, r"singleton_beat_task_ttl = 0 is not valid"),
        ({"singleton_beat_task_redis_urls": ["localhost"]},
         r"singleton_beat_task_redis_urls = 'localhost' is not valid: a redis:// or rediss://"),
    ],
)  # fmt: skip
def test_a_bad_task_setting_is_refused_naming_it(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TaskConfig.from_conf({"singleton_beat_redis_urls": URLS, **settings})


def test_a_failing_event_subscriber_never_fails_the_task(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> None:
    master = redis_cluster(1)[0]
    app = Celery("events", broker="memory://")
    app.conf.singleton_beat_redis_urls = [master.url]

    @app.task(base=SingletonTask, shared=False)
    def add(a: int, b: int) -> int:
        return a + b

    seen: list[str] = []

    def broken(event: events.Event) -> None:
        seen.append(type(event).__name__)
        raise RuntimeError("recorder down")

    unsubscribe = events.subscribe(broken)
    try:
        assert add.apply((2, 3)).get() == 5
    finally:
        unsubscribe()
    assert seen == ["LockAttempt", "RunStarted", "RunFinished"]


def test_a_backend_given_as_a_function_is_called_with_the_app(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> None:
    from celery_singleton_beat.locks import Redlock

    master = redis_cluster(1)[0]
    app = Celery("backend", broker="memory://")
    app.conf.singleton_beat_redis_urls = ["redis://127.0.0.1:1/0"]  # not used: own backend
    own = Redlock.from_urls([master.url])
    given: list[Celery] = []

    def backend(for_app: Celery) -> Redlock:
        given.append(for_app)
        return own

    @app.task(base=SingletonTask, singleton_backend=backend, shared=False)
    def add(a: int, b: int) -> int:
        return a + b

    assert add.apply((2, 3)).get() == 5
    assert given and given[0] is app


def test_a_backend_given_as_a_function_is_made_once_per_app() -> None:
    from celery_singleton_beat.locks import MemoryLock

    app = Celery("backend-once", broker="memory://")
    app.conf.singleton_beat_redis_urls = ["redis://127.0.0.1:1/0"]  # not used: own backend
    made: list[MemoryLock] = []

    def backend(for_app: Celery) -> MemoryLock:
        made.append(MemoryLock())
        return made[-1]

    @app.task(base=SingletonTask, singleton_backend=backend, shared=False)
    def add(a: int, b: int) -> int:
        return a + b

    assert [add.apply((n, 1)).get() for n in range(3)] == [1, 2, 3]
    assert len(made) == 1, "one backend: calls of the task exclude one another"

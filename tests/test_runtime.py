"""One runtime per Celery app: settings, store, lock backends and clock."""

from __future__ import annotations

from celery import Celery

from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.stores import MemorySlotStore


def app_on_memory(name: str) -> Celery:
    app = Celery(name, broker="memory://")
    app.conf.singleton_beat_store = "celery_singleton_beat.stores.MemorySlotStore"
    return app


def test_each_app_has_one_runtime_of_its_own() -> None:
    first, second = app_on_memory("first"), app_on_memory("second")
    assert Runtime.of(first) is Runtime.of(first)
    assert Runtime.of(first) is not Runtime.of(second)
    assert Runtime.of(first).store is Runtime.of(first).store
    assert Runtime.of(first).store is not Runtime.of(second).store


def test_a_clock_set_on_an_app_is_that_apps_alone() -> None:
    first, second = app_on_memory("first"), app_on_memory("second")
    Runtime.of(first).clock = lambda: 1_767_225_600.5
    assert Runtime.of(first).now_ms() == 1_767_225_600_500
    assert Runtime.of(second).now_ms() != 1_767_225_600_500


def test_a_store_named_by_its_class_path_is_made_without_redis() -> None:
    runtime = Runtime.of(app_on_memory("memory"))
    assert isinstance(runtime.store, MemorySlotStore)
    assert runtime.config.redis_urls == ()

"""One runtime per Celery app: settings, store, lock backends and clock."""

from __future__ import annotations

import json
import os
import socket

from celery import Celery

from celery_singleton_beat.core import process
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


def test_a_forked_child_has_a_runtime_and_an_owner_of_its_own() -> None:
    """A prefork worker's child must not share its parent's connections: it gets its own
    runtime on first use, and lock tokens name the child, not the parent."""
    app = app_on_memory("forked")
    parent = Runtime.of(app)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child reports through the pipe)
        try:
            mine = Runtime.of(app)
            report = [mine is not parent, mine.pid, process.pid(), process.owner()]
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        own_runtime, runtime_pid, pid, owner = json.loads(pipe.read())
    os.waitpid(child, 0)
    assert own_runtime
    assert runtime_pid == pid == child
    assert owner == f"{socket.gethostname()}/{child}"
    assert process.pid() == os.getpid() != child
    assert Runtime.of(app) is parent

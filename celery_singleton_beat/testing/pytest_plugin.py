"""pytest fixtures for testing code that uses celery-singleton-beat.

Installed with the package (entry point ``pytest11``), so the fixtures are there in every
pytest run; nothing is imported until a test asks for one of them, so runs that do not
use them pay nothing.

- ``singleton_beat_memory_lock``: every ``SingletonTask`` and ``SlotAwareTask`` of every
  Celery app in the test process locks on one in-memory backend (a
  :class:`~celery_singleton_beat.locks.MemoryLock`), returned to the test, for the
  test's duration: no Redis needed, under ``task_always_eager``, in Celery's in-process
  test worker (``celery.contrib.testing.worker.start_worker``, the ``celery_worker``
  fixture) and with pytest-celery's ``celery_app``;
- ``singleton_beat_redis_masters``: real ``redis-server`` masters on free ports
  (``singleton_beat_redis_masters_count`` of them, 3 unless overridden), stopped after
  the test; ``singleton_beat_redis_urls``: their URLs, for ``singleton_beat_redis_urls``;
- ``singleton_beat_sqlalchemy_url``: a SQLite database in the test's directory with the
  SQLAlchemy store's tables, for ``singleton_beat_sqlalchemy_url`` (with
  ``singleton_beat_store = "sqlalchemy"``; the ``[sqlalchemy]`` extra).

Celery's in-process test worker of an app that uses the library drops a second copy of a
beat slot for every task, as ``celery worker`` does (:mod:`celery_singleton_beat.tasks.copies`):
the plugin connects that worker hook once the run has imported Celery.

See ``docs/testing.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from celery_singleton_beat.locks import MemoryLock
    from celery_singleton_beat.testing import RedisServer


def pytest_configure(config: pytest.Config) -> None:
    _connect_worker_hook()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _connect_worker_hook()  # before the test's fixtures start a worker


def _connect_worker_hook() -> None:
    """Connect the hook with which a worker drops second copies of beat slots, once Celery
    is imported (a run that does not use Celery imports nothing for it)."""
    if "celery" in sys.modules and "celery_singleton_beat.tasks.copies" not in sys.modules:
        from celery_singleton_beat.tasks import copies  # noqa: PLC0415

        copies.connect()


@pytest.fixture
def singleton_beat_memory_lock() -> Iterator[MemoryLock]:
    """An in-memory lock backend that every singleton and slot-aware task uses meanwhile.

    It replaces the configured backend (Redis masters, a database) and any task's own
    ``singleton_backend``, in every thread of the test process, so that no Redis URL is
    needed. The test can inspect or take locks on it (``holder(key)``, ``acquire``).
    """
    from celery_singleton_beat.locks import MemoryLock  # noqa: PLC0415
    from celery_singleton_beat.tasks.singleton import override_lock_backend  # noqa: PLC0415

    backend = MemoryLock()
    with override_lock_backend(backend):
        yield backend


@pytest.fixture
def singleton_beat_redis_masters_count() -> int:
    """How many masters ``singleton_beat_redis_masters`` starts; override to change it."""
    return 3


@pytest.fixture
def singleton_beat_redis_masters(
    singleton_beat_redis_masters_count: int,
) -> Iterator[list[RedisServer]]:
    """Independent ``redis-server`` processes on free ports, stopped after the test.

    Each is a :class:`~celery_singleton_beat.testing.RedisServer` the test may ``kill()``,
    ``pause()``, ``resume()`` or ``restart()``. Needs ``redis-server`` on ``PATH`` (or
    the ``REDIS_SERVER`` environment variable naming it).
    """
    from celery_singleton_beat.testing import redis_servers  # noqa: PLC0415

    with redis_servers(singleton_beat_redis_masters_count) as servers:
        yield servers


@pytest.fixture
def singleton_beat_redis_urls(singleton_beat_redis_masters: list[RedisServer]) -> list[str]:
    """The URLs of ``singleton_beat_redis_masters``, as ``singleton_beat_redis_urls`` takes them."""
    return [server.url for server in singleton_beat_redis_masters]


@pytest.fixture
def singleton_beat_sqlalchemy_url(tmp_path: Path) -> Iterator[str]:
    """The URL of a SQLite database in the test's directory, with the tables of the
    SQLAlchemy store and lock backend made (``db upgrade``), for
    ``singleton_beat_sqlalchemy_url`` or ``SqlAlchemyLock(url)``."""
    from celery_singleton_beat.connections.sqlalchemy import (  # noqa: PLC0415
        engine_for,
        upgrade,
    )

    url = f"sqlite:///{tmp_path / 'singleton-beat.sqlite3'}"
    upgrade(engine_for(url))
    yield url
    engine_for(url).dispose()

"""The fixtures every test directory shares: Redis masters, the task cluster, and the
library's events as they are emitted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from celery_singleton_beat.observe import events
from celery_singleton_beat.testing import RedisServer, redis_servers
from tests.support.clusters import TaskCluster, task_cluster
from tests.support.databases import SQLALCHEMY_VENDORS, SqlAlchemyDatabases
from tests.support.events import EventLog

pytest_plugins: list[str] = []


@pytest.fixture
def redis_cluster() -> Iterator[Callable[[int], list[RedisServer]]]:
    """Start K independent redis-server masters: ``servers = redis_cluster(3)``."""
    with ExitStack() as stack:
        yield lambda count: stack.enter_context(redis_servers(count))


@pytest.fixture
def three_masters(redis_cluster: Callable[[int], list[RedisServer]]) -> list[RedisServer]:
    return redis_cluster(3)


@pytest.fixture
def cluster(three_masters: list[RedisServer], tmp_path: Path) -> Iterator[TaskCluster]:
    """Workers of ``tests.tasks.app`` on three masters and a broker of their own (started
    by the test: ``cluster.start_worker()``)."""
    with task_cluster(tmp_path, three_masters) as tasks:
        yield tasks


@pytest.fixture
def event_log() -> Iterator[EventLog]:
    log = EventLog()
    unsubscribe = events.subscribe(log)
    yield log
    unsubscribe()


@pytest.fixture
def fired(event_log: EventLog) -> list[events.SlotFired]:
    """Every ``SlotFired`` event emitted in this process while the test runs."""
    return event_log.of(events.SlotFired)


@pytest.fixture(scope="session")
def sqlalchemy_databases() -> Iterator[SqlAlchemyDatabases]:
    """The SQLAlchemy tests' databases, made on first use and dropped at the end."""
    databases = SqlAlchemyDatabases()
    yield databases
    databases.drop()


@pytest.fixture(params=SQLALCHEMY_VENDORS)
def sqlalchemy_url(
    request: pytest.FixtureRequest, sqlalchemy_databases: SqlAlchemyDatabases, tmp_path: Path
) -> Iterator[str]:
    """The URL of a database with the library's tables, on SQLite, PostgreSQL and MariaDB
    in turn; emptied after the test."""
    url = sqlalchemy_databases.url(request.param, tmp_path)
    yield url
    sqlalchemy_databases.empty(url)

"""The fixtures every test directory shares: Redis masters, the task cluster, and the
library's events as they are emitted."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest.register_assert_rewrite("tests.support")

if TYPE_CHECKING:  # kazoo is the [zookeeper] extra's: imported by the fixture that uses it
    from celery_singleton_beat.connections.zookeeper import ZooKeeper
from celery_singleton_beat.observe import events  # noqa: E402  (after the rewrite hook)
from celery_singleton_beat.testing import (  # noqa: E402
    RedisClusterServers,
    RedisServer,
    redis_cluster_servers,
    redis_servers,
)
from celery_singleton_beat.testing.zookeeper import (  # noqa: E402
    ZooKeeperEnsemble,
    ZooKeeperServer,
    zookeeper_ensemble,
    zookeeper_server,
)
from tests.support.clusters import TaskCluster, task_cluster  # noqa: E402
from tests.support.databases import SQLALCHEMY_VENDORS, SqlAlchemyDatabases  # noqa: E402
from tests.support.events import EventLog  # noqa: E402
from tests.support.round_trips import Trips  # noqa: E402
from tests.support.scraped import Sample, scrape_metrics  # noqa: E402

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
def sharded_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of its own (3 primaries, a replica each, failover after 1 s), for a
    test that kills its nodes."""
    with redis_cluster_servers() as servers:
        yield servers


@pytest.fixture(scope="session")
def _session_sharded_cluster() -> Iterator[RedisClusterServers]:
    with redis_cluster_servers() as servers:
        yield servers


@pytest.fixture
def shared_sharded_cluster(
    _session_sharded_cluster: RedisClusterServers,
) -> RedisClusterServers:
    """One Redis Cluster for the whole run, emptied before each test that uses it: for the
    tests that leave its nodes alone (starting a cluster takes about two seconds)."""
    _session_sharded_cluster.flush()
    return _session_sharded_cluster


@pytest.fixture(scope="session")
def _session_zookeeper() -> Iterator[ZooKeeperServer]:
    with zookeeper_server() as server:
        yield server


@pytest.fixture
def zookeeper(_session_zookeeper: ZooKeeperServer) -> Iterator[Callable[[], ZooKeeper]]:
    """Sessions on one standalone ZooKeeper server for the whole run, each test under a
    root znode of its own: ``zk = zookeeper()`` (closed at the end)."""
    from celery_singleton_beat.connections.zookeeper import ZooKeeper
    from celery_singleton_beat.settings.zookeeper import zookeeper_settings

    root = f"/test-{uuid.uuid4().hex}"
    made: list[ZooKeeper] = []

    def connect() -> ZooKeeper:
        made.append(ZooKeeper(zookeeper_settings(_session_zookeeper.name), root, wait=2.0))
        return made[-1]

    yield connect
    for zk in made:
        zk.close()


@pytest.fixture
def ensemble() -> Iterator[ZooKeeperEnsemble]:
    """A ZooKeeper ensemble of three members of its own, for a test that kills them."""
    with zookeeper_ensemble(3) as members:
        yield members


@pytest.fixture
def cluster(three_masters: list[RedisServer], tmp_path: Path) -> Iterator[TaskCluster]:
    """Workers of ``tests.tasks.app`` on three masters and a broker of their own (started
    by the test: ``cluster.start_worker()``)."""
    with task_cluster(tmp_path, three_masters) as tasks:
        yield tasks


@pytest.fixture
def scraped(redis_cluster: Callable[[int], list[RedisServer]]) -> list[Sample]:
    """The library's samples on a beat replica's ``/metrics`` (see :mod:`tests.support.scraped`)."""
    return scrape_metrics(redis_cluster(1)[0])[1]


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Trips:
    """Counts the round trips to the masters made from here on (``trips.count``)."""
    return Trips(monkeypatch)


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

"""Beat replicas and a worker of ``tests.sqla.app``: the SQLAlchemy store on a test
database, RabbitMQ as the broker (a virtual host of the test's own), no Redis anywhere.

What the worker executed is read back from the ``executions`` table; which servers each
process spoke to, from the connections it logged (``TEST_CONNECTIONS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from celery_singleton_beat.connections.sqlalchemy import engine_for
from celery_singleton_beat.testing import CeleryCluster
from tests.support.clusters import ROOT

RABBITMQ = os.environ.get("CSB_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")
EXECUTIONS = (
    "CREATE TABLE executions (entry VARCHAR(255), task_id VARCHAR(255), slot VARCHAR(64), "
    "replica VARCHAR(255), at DOUBLE PRECISION, worker VARCHAR(255))"
)


@dataclass
class SqlBeatCluster(CeleryCluster):
    """Replicas and a worker of ``tests.sqla.app``."""

    dburi: str = ""
    """The store's database as the replicas reach it (through a proxy, for some tests)."""
    executions_url: str = ""
    """The same database, reached directly: where the worker writes what it ran."""
    broker: str = ""
    schedule: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.connections = self.workdir / "connections.log"
        self.base_env = {
            "PYTHONPATH": str(ROOT),
            "TEST_BROKER_URL": self.broker,
            "TEST_DBURI": self.dburi,
            "TEST_EXECUTIONS_URL": self.executions_url,
            "TEST_SCHEDULE": json.dumps(self.schedule),
            "TEST_SETTINGS": json.dumps(self.settings),
            "TEST_CONNECTIONS": str(self.connections),
        }

    def settings_env(self, settings: dict[str, Any]) -> dict[str, str]:
        return {"TEST_SETTINGS": json.dumps({**self.settings, **settings})}

    def executions(self) -> list[dict[str, Any]]:
        with engine_for(self.executions_url).connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM executions ORDER BY at"))
            return [dict(row._mapping) for row in rows]

    def connected(self) -> set[int]:
        """The remote ports of the TCP connections the cluster's processes hold now, as the
        kernel lists them (those a C library opens, libpq's, included)."""
        return {port for p in self.processes if p.alive() for port in remote_ports(p.popen.pid)}

    def opened(self) -> set[tuple[str, int]]:
        """Every (host, port) a process of the cluster opened a TCP connection to from
        Python (the Redis client's, the AMQP client's; not libpq's, which is C)."""
        if not self.connections.exists():
            return set()
        found = set()
        for line in self.connections.read_text().splitlines():
            _pid, host, port = line.split()
            found.add((host, int(port)))
        return found


def remote_ports(pid: int) -> set[int]:
    """The remote ports of the TCP sockets process ``pid`` holds (Linux ``/proc``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == "01":  # established
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ virtual host of the test's own (its queues gone with it): its URL."""
    vhost = f"csb-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)

    ctl("add_vhost", vhost)
    try:
        ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{RABBITMQ}/{vhost}"
    finally:
        ctl("delete_vhost", vhost)


@contextmanager
def sqlalchemy_beat_cluster(
    workdir: Path,
    url: str,
    schedule: dict[str, Any],
    *,
    replicas_url: str | None = None,
    **settings: Any,
) -> Iterator[SqlBeatCluster]:
    """Replicas of ``tests.sqla.app`` on the database ``url`` (``replicas_url``: the same
    database as the replicas reach it), with a fresh ``executions`` table."""
    with engine_for(url).begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS executions")
        connection.exec_driver_sql(EXECUTIONS)
    with rabbitmq_vhost() as broker:
        cluster = SqlBeatCluster(
            workdir, "tests.sqla.app", queue="sqla-tests", dburi=replicas_url or url,
            executions_url=url, broker=broker, schedule=schedule, settings=settings,
        )  # fmt: skip
        try:
            yield cluster
        finally:
            cluster.stop()

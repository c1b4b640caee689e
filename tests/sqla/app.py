"""The Celery app the SQLAlchemy tests run as beat replicas and workers: RabbitMQ as the
broker, the SQLAlchemy slot store, no Redis anywhere.

Configured from the environment: ``TEST_BROKER_URL`` (an ``amqp://`` URL), ``TEST_DBURI``
(the SQLAlchemy URL of the store and of sqlalchemy-celery-beat's tables: ``beat_dburi``),
``TEST_EXECUTIONS_URL`` (where the worker writes each execution it runs, in the table
``executions``), ``TEST_QUEUE``, ``TEST_SCHEDULE`` (JSON: entry name -> {"every":
seconds}), ``TEST_SETTINGS`` (JSON of extra Celery settings), ``TEST_CRASH_ENTRY`` (the
``CrashAfterPublish`` scheduler dies after publishing a slot of it, before marking it
done) and ``TEST_CONNECTIONS`` (a file: every TCP connection this process opens is
written there as ``pid host port``, so that a test can tell which servers it spoke to).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

import sqlalchemy as sa
from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.connections.sqlalchemy import engine_for
from celery_singleton_beat.core.schema import Header
from celery_singleton_beat.tasks.singleton import SlotAwareTask


def _log_connections(path: str) -> None:
    """Write every ``socket.connect`` of this process to ``path`` (an audit hook: it sees
    the connections of every library, the Redis client's included)."""

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect" and isinstance(args[1], tuple):
            host, port = args[1][:2]
            with open(path, "a") as out:
                out.write(f"{os.getpid()} {host} {port}\n")

    sys.addaudithook(hook)


if os.environ.get("TEST_CONNECTIONS"):
    _log_connections(os.environ["TEST_CONNECTIONS"])

app = Celery("tests.sqla.app", broker=os.environ.get("TEST_BROKER_URL", "memory://"))
app.conf.update(
    beat_scheduler="celery_singleton_beat.Scheduler",
    beat_dburi=os.environ.get("TEST_DBURI"),
    singleton_beat_store="sqlalchemy",
    # a slot sent again (its replica died before marking it done) runs once: the worker
    # checks the slot's "ran" mark on the SQLAlchemy lock backend, in the same database
    singleton_beat_task_backend="celery_singleton_beat.locks.sqlalchemy.from_app",
    task_default_queue=os.environ.get("TEST_QUEUE", "sqla-tests"),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # no result backend; and no celery.backend_cleanup row for sqlalchemy-celery-beat
    result_expires=None,
    beat_schedule={
        name: {"task": "record", "schedule": float(entry["every"]), "args": (name,)}
        for name, entry in json.loads(os.environ.get("TEST_SCHEDULE", "{}")).items()
    },
)
app.conf.update(json.loads(os.environ.get("TEST_SETTINGS", "{}")))


@app.task(bind=True, name="record", base=SlotAwareTask)
def record(self: Any, entry: str) -> None:
    """Write one execution, with the slot headers beat gave the message, to
    ``executions``."""
    headers = self.request.headers or {}
    row = {
        "entry": entry,
        "task_id": self.request.id,
        "slot": headers.get(Header.SLOT.value),
        "replica": headers.get(Header.REPLICA.value),
        "at": time.time(),
        "worker": socket.gethostname(),
    }
    engine = engine_for(os.environ["TEST_EXECUTIONS_URL"])
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO executions (entry, task_id, slot, replica, at, worker) "
            "VALUES (:entry, :task_id, :slot, :replica, :at, :worker)"
        ), row)  # fmt: skip


class CrashAfterPublish(Scheduler):
    """Dies after publishing a slot of ``TEST_CRASH_ENTRY``, before marking it done."""

    def slot_published(self, plan: Any, slot: int) -> None:
        if plan.name == os.environ.get("TEST_CRASH_ENTRY"):
            os._exit(17)

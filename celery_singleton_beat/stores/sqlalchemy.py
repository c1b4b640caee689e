"""The slot store on a database through SQLAlchemy: ``singleton_beat_store = "sqlalchemy"``.

For Flask, FastAPI or plain Celery projects on PostgreSQL, MariaDB/MySQL or SQLite,
without Redis and without Django. The database is the SQLAlchemy URL of
``singleton_beat_sqlalchemy_url`` (default: ``beat_dburi``, sqlalchemy-celery-beat's
setting), through any driver SQLAlchemy has for it (psycopg 3, PyMySQL, sqlite3).

The statements, and every decision around them, are those of
:class:`~celery_singleton_beat.stores.sql.SqlSlotStore`, which the Django app's database
store runs too; the tables are those of :mod:`celery_singleton_beat.connections.sqlalchemy`
(its :data:`~celery_singleton_beat.connections.sqlalchemy.metadata`, for Alembic), made by
``celery -A proj singleton-beat db upgrade``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from celery_singleton_beat.connections import sqlalchemy as schema
from celery_singleton_beat.connections.sqlalchemy import (
    SCHEMA_VERSION,
    SqlAlchemyDatabase,
    check_schema,
    engine_for,
    metadata,
    url_text,
)
from celery_singleton_beat.errors import SchemaError
from celery_singleton_beat.locks.base import LockBackend
from celery_singleton_beat.locks.sqlalchemy import SqlAlchemyLock
from celery_singleton_beat.settings.config import Config, upgrade_command
from celery_singleton_beat.stores.sql import SqlSlotStore, Tables

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["TABLES", "SqlAlchemySlotStore", "metadata"]

logger = logging.getLogger(__name__)

TABLES = Tables(
    entries=schema.entries.name,
    anchors=schema.anchors.name,
    fences=schema.fences.name,
    heartbeats=schema.heartbeats.name,
    schedule=schema.schedule.name,
    runs_sent=schema.runs_sent.name,
    run_states=schema.run_states.name,
    locks=schema.locks.name,
)


class SqlAlchemySlotStore(SqlSlotStore):
    """Schedule state in the database ``url`` names (or of ``engine``)."""

    database: SqlAlchemyDatabase

    def __init__(self, url: str | sa.Engine) -> None:
        self.engine = url if isinstance(url, sa.Engine) else engine_for(url)
        super().__init__(SqlAlchemyDatabase(self.engine), TABLES)
        self.command = "celery -A proj singleton-beat db upgrade"
        """The command that makes the tables, as errors name it."""

    @classmethod
    def from_config(cls, app: Celery, config: Config) -> SqlAlchemySlotStore:
        """The store on ``singleton_beat_sqlalchemy_url`` (default ``beat_dburi``), its
        tables checked: missing or outdated, :class:`~celery_singleton_beat.errors.SchemaError`
        names the command to run. A database that does not answer yet is not an error
        (beat waits for it, as for any outage); its tables are checked when it answers."""
        assert config.sqlalchemy_url is not None  # checked with the settings
        store = cls(config.sqlalchemy_url)
        store.command = upgrade_command(app)
        try:
            check_schema(store.engine, store.command)
        except sa.exc.OperationalError as exc:
            logger.warning(
                "singleton beat: %s does not answer (%s); its tables are checked when it does",
                store.name, exc.orig,
            )  # fmt: skip
            store.database.pending_check = store.command
        return store

    def describe(self) -> str:
        return f"slot store -> {self.database.vendor} database {url_text(self.engine)}"

    def check(self) -> list[tuple[str, str]]:
        """Whether the database answers, and its tables are this release's."""
        refused = self.database.unsupported()
        if refused:
            return [("ERROR", f"{self.name}: {refused}")]
        try:
            check_schema(self.engine, self.command)
        except SchemaError as exc:
            return [("ERROR", str(exc))]
        except sa.exc.SQLAlchemyError as exc:
            return [("ERROR", f"{self.name} does not answer: {type(exc).__name__}: {exc}")]
        return [
            ("OK", f"{self.name} answers ({self.database.vendor})"),
            ("OK", f"{self.name}: the tables are at schema version {SCHEMA_VERSION}"),
        ]

    def leader_lock(self, owner: str) -> LockBackend:
        return SqlAlchemyLock(self.engine)

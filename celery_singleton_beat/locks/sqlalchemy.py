"""A lock backend on a database through SQLAlchemy, for projects without Redis or Django.

The statements are those of :class:`~celery_singleton_beat.locks.sql.SqlLock` (the Django
app's ``DatabaseLock`` runs them too), on the table ``singleton_beat_locks`` of
:mod:`celery_singleton_beat.connections.sqlalchemy`. For singleton tasks::

    singleton_beat_task_backend = "celery_singleton_beat.locks.sqlalchemy.from_app"

takes the database of ``singleton_beat_sqlalchemy_url`` (default: ``beat_dburi``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from celery_singleton_beat.connections.sqlalchemy import (
    SqlAlchemyDatabase,
    check_schema,
    engine_for,
    locks,
    url_text,
)
from celery_singleton_beat.locks.base import Clock
from celery_singleton_beat.locks.sql import SqlLock
from celery_singleton_beat.settings.config import sqlalchemy_url, upgrade_command

if TYPE_CHECKING:
    from celery import Celery


class SqlAlchemyLock(SqlLock):
    """Leases in ``singleton_beat_locks`` of the database ``url`` names (or of ``engine``)."""

    def __init__(
        self,
        url: str | sa.Engine,
        *,
        retry_delay: float = 0.05,
        clock: Clock = time.monotonic,
    ) -> None:
        self.engine = url if isinstance(url, sa.Engine) else engine_for(url)
        database = SqlAlchemyDatabase(self.engine)
        super().__init__(database, locks.name, retry_delay=retry_delay, clock=clock)

    def __repr__(self) -> str:
        return f"<SqlAlchemyLock {url_text(self.engine)}>"


def from_app(app: Celery) -> SqlAlchemyLock:
    """The lock backend on the app's database (``singleton_beat_sqlalchemy_url``, default
    ``beat_dburi``), its tables checked first
    (:class:`~celery_singleton_beat.errors.SchemaError` names the command that makes them)."""
    engine = engine_for(sqlalchemy_url(app.conf))
    check_schema(engine, upgrade_command(app))
    return SqlAlchemyLock(engine)

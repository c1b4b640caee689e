"""A lock backend on the Django database, for projects without Redis.

One row per key in ``singleton_beat_lock`` (the :class:`~.models.Lock` model), taken and
kept by the statements of :class:`celery_singleton_beat.locks.sql.SqlLock`, which the
SQLAlchemy lock backend runs too: ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL and
MariaDB/MySQL, one conditional ``UPDATE`` on SQLite, expiry on the database's clock.

Each operation is one short transaction of its own. It cannot run inside a caller's
``transaction.atomic()`` on the same database alias (the lock would stay invisible to
others until that transaction commits): give it a separate alias with ``using=``.
"""

from __future__ import annotations

import time

from celery_singleton_beat.connections.sql import NOW_MS
from celery_singleton_beat.locks.base import Clock
from celery_singleton_beat.locks.sql import SqlLock

from .database import DjangoDatabase
from .models import Lock

__all__ = ["NOW_MS", "DatabaseLock"]


class DatabaseLock(SqlLock):
    """Leases stored in the database of Django alias ``using`` (default ``"default"``)."""

    def __init__(
        self, using: str = "default", *, retry_delay: float = 0.05, clock: Clock = time.monotonic
    ) -> None:
        database = DjangoDatabase(
            using, advice=f"pass another alias: DatabaseLock(using='locks') (not {using!r})"
        )
        super().__init__(database, Lock._meta.db_table, retry_delay=retry_delay, clock=clock)
        self.using = using

    def __repr__(self) -> str:
        return f"<DatabaseLock using={self.using!r}>"

"""A lock backend on a SQL database, for projects without Redis: the statements, written once.

One row per key: the token it is held with, when it expires (on the database's clock, so
workers with skewed clocks agree) and a fencing counter that keeps rising across grants.
PostgreSQL and MariaDB/MySQL take the row with ``SELECT … FOR UPDATE SKIP LOCKED``: a row
another transaction is deciding on counts as held, so no caller ever queues behind
another. SQLite, which has no row locks, decides in one conditional ``UPDATE``.

Each operation is one short transaction of its own, on a
:class:`~celery_singleton_beat.connections.sql.Database`: the Django app's
``DatabaseLock`` gives one over a Django alias,
:class:`~celery_singleton_beat.locks.sqlalchemy.SqlAlchemyLock` over a SQLAlchemy engine.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery_singleton_beat.connections.sql import NOW_MS, Database, quoted
from celery_singleton_beat.errors import ConfigurationError, LockError
from celery_singleton_beat.locks.base import Clock, HeldLock, Lease, LockBackend
from celery_singleton_beat.locks.redlock import clock_drift, default_owner

T = TypeVar("T")

#: The longest key the table holds.
KEY_LENGTH = 255


class SqlLock(LockBackend):
    """Leases stored in the table ``table`` of ``database``."""

    def __init__(
        self,
        database: Database,
        table: str,
        *,
        retry_delay: float = 0.05,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(retry_delay=retry_delay, clock=clock)
        self.database = database
        self.table = table

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.database.name}>"

    def describe(self) -> str:
        return self.database.name

    def _run(self, step: Callable[[Any, str, str], T]) -> T:
        """``step(cursor, vendor, now)`` in a transaction of its own (``now``: the SQL of
        the database's clock in ms); LockError when the database fails."""
        database = self.database
        refused = database.unsupported() or database.misuse()
        if refused:
            raise LockError(f"{type(self).__name__}: {refused}")
        vendor = database.vendor
        try:
            with database.transaction() as cursor:
                return step(cursor, vendor, NOW_MS[vendor])
        except database.errors as exc:
            database.reset()  # a broken connection is replaced on the next call
            raise LockError(f"{database.name}: {type(exc).__name__}: {exc}") from exc

    def do_acquire(self, key: str, ttl: float, token: str | None = None) -> Lease | None:
        token = token or f"{secrets.token_hex(16)}@{default_owner()}"
        ttl_ms = max(1, round(ttl * 1000))
        start = self.clock()
        if len(key) > KEY_LENGTH:
            raise ConfigurationError(
                "key", key,
                f"at most {KEY_LENGTH} characters for {type(self).__name__} ({len(key)} given)",
            )  # fmt: skip

        def step(cursor: Any, vendor: str, now: str) -> int | None:
            if vendor == "sqlite":
                return self._take_conditionally(cursor, key, token, ttl_ms, now)
            return self._take_skip_locked(cursor, vendor, key, token=token, ttl_ms=ttl_ms, now=now)

        fence = self._run(step)
        if fence is None:
            return None
        return Lease(
            key, token, fence=fence, ttl=ttl,
            valid_until=start + ttl - clock_drift(ttl), clock=self.clock,
        )  # fmt: skip

    def _take_skip_locked(
        self, cursor: Any, vendor: str, key: str, *, token: str, ttl_ms: int, now: str
    ) -> int | None:
        t, k = self.table, quoted(vendor, "key")
        cursor.execute(
            f"SELECT token, expires_ms, fence, {now} FROM {t} WHERE {k} = %s "
            f"FOR UPDATE SKIP LOCKED",
            [key],
        )
        row = cursor.fetchone()
        if row is None:
            # absent, or another transaction is deciding on it right now (held)
            insert = "INSERT IGNORE INTO" if vendor == "mysql" else "INSERT INTO"
            conflict = "" if vendor == "mysql" else f" ON CONFLICT ({k}) DO NOTHING"
            cursor.execute(
                f"{insert} {t} ({k}, token, expires_ms, fence) "
                f"VALUES (%s, %s, {now} + %s, 1){conflict}",
                [key, token, ttl_ms],
            )
            return 1 if cursor.rowcount == 1 else None
        held_with, expires_ms, fence, now_ms = row
        if held_with and expires_ms > now_ms and held_with != token:
            return None
        cursor.execute(
            f"UPDATE {t} SET token = %s, expires_ms = %s, fence = %s WHERE {k} = %s",
            [token, now_ms + ttl_ms, fence + 1, key],
        )
        return int(fence) + 1

    def _take_conditionally(
        self, cursor: Any, key: str, token: str, ttl_ms: int, now: str
    ) -> int | None:
        t = self.table
        cursor.execute(
            f"UPDATE {t} SET token = %s, expires_ms = {now} + %s, fence = fence + 1 "
            f"WHERE \"key\" = %s AND (token = '' OR expires_ms <= {now} OR token = %s)",
            [token, ttl_ms, key, token],
        )
        if cursor.rowcount == 1:
            cursor.execute(f'SELECT fence FROM {t} WHERE "key" = %s', [key])
            return int(cursor.fetchone()[0])
        cursor.execute(
            f'INSERT OR IGNORE INTO {t} ("key", token, expires_ms, fence) '
            f"VALUES (%s, %s, {now} + %s, 1)",
            [key, token, ttl_ms],
        )
        return 1 if cursor.rowcount == 1 else None

    def do_extend(self, lease: Lease, ttl: float) -> bool:
        start = self.clock()

        def step(cursor: Any, vendor: str, now: str) -> bool:
            k = quoted(vendor, "key")
            cursor.execute(
                f"UPDATE {self.table} SET expires_ms = {now} + %s "
                f"WHERE {k} = %s AND token = %s AND expires_ms > {now}",
                [max(1, round(ttl * 1000)), lease.key, lease.token],
            )
            return bool(cursor.rowcount == 1)

        if not self._run(step):
            return False
        lease.ttl = ttl
        lease.valid_until = start + ttl - clock_drift(ttl)
        return True

    def do_release(self, lease: Lease) -> bool:
        def step(cursor: Any, vendor: str, now: str) -> bool:
            k = quoted(vendor, "key")
            cursor.execute(
                f"UPDATE {self.table} SET token = '', expires_ms = 0 WHERE {k} = %s AND token = %s",
                [lease.key, lease.token],
            )
            return bool(cursor.rowcount == 1)

        return self._run(step)

    def holder(self, key: str) -> str | None:
        def step(cursor: Any, vendor: str, now: str) -> str | None:
            cursor.execute(
                f"SELECT token FROM {self.table} "
                f"WHERE {quoted(vendor, 'key')} = %s AND token <> '' AND expires_ms > {now}",
                [key],
            )
            row = cursor.fetchone()
            return str(row[0]) if row else None

        return self._run(step)

    def held(self) -> list[HeldLock]:
        def step(cursor: Any, vendor: str, now: str) -> list[HeldLock]:
            k = quoted(vendor, "key")
            cursor.execute(
                f"SELECT {k}, token, expires_ms - {now}, fence FROM {self.table} "
                f"WHERE token <> '' AND expires_ms > {now} ORDER BY {k}"
            )
            return [
                HeldLock(str(key), str(token), round(int(left) / 1000, 3), int(fence))
                for key, token, left, fence in cursor.fetchall()
            ]

        return self._run(step)

    def close(self) -> None:
        self.database.close()

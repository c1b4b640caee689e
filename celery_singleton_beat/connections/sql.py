"""A SQL database as the SQL slot store and lock backend see it, whoever connects to it.

The statements of :mod:`celery_singleton_beat.stores.sql` and
:mod:`celery_singleton_beat.locks.sql` are written once, as text for a DB-API cursor with
``%s`` placeholders, for three databases: PostgreSQL, MariaDB/MySQL and SQLite. What runs
them is a :class:`Database`: a vendor, and a cursor inside a transaction of its own. The
Django app gives one over a Django database alias, :mod:`.sqlalchemy` one over a
SQLAlchemy engine; neither the statements nor the decisions around them exist twice.

This module also holds what differs between the three databases (the current time in
milliseconds on the database's clock, "insert unless present", a list of rows as one
parameter), so that a statement is spelled once with the vendor's words put in.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

#: The vendors the statements are written for (Django's ``connection.vendor`` names).
VENDORS = ("postgresql", "mysql", "sqlite")

#: Milliseconds since the epoch on the database's clock (never a replica's).
NOW_MS = {
    "postgresql": "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint",
    "mysql": "CAST(FLOOR(UNIX_TIMESTAMP(NOW(6)) * 1000) AS SIGNED)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
}

#: Rows per statement: SQLite builds older than 3.32 take at most 999 parameters.
ROWS = {"sqlite": 120, "postgresql": 10_000, "mysql": 1000}

#: "Insert these rows unless a row with the same key is there": (verb, tail).
INSERT_IGNORE = {
    "postgresql": ("INSERT INTO", " ON CONFLICT DO NOTHING"),
    "mysql": ("INSERT IGNORE INTO", ""),
    "sqlite": ("INSERT OR IGNORE INTO", ""),
}


class Cursor(Protocol):
    """The part of a DB-API cursor the statements use (``%s`` placeholders)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


class Database(abc.ABC):
    """Where the SQL store and lock run their statements: a vendor and transactions.

    Each call of :meth:`transaction` is one short transaction of its own, committed when
    the block ends and rolled back when it raises. The statements never run inside a
    caller's transaction: a claim would stay invisible to other replicas until it commits.
    """

    #: What the database is, for errors and log lines ("database 'default'").
    name: str = "database"

    @property
    @abc.abstractmethod
    def vendor(self) -> str:
        """``"postgresql"``, ``"mysql"`` (MariaDB too) or ``"sqlite"``; anything else is
        refused by the store and the lock (see :meth:`unsupported`)."""

    @property
    @abc.abstractmethod
    def errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions that mean the database failed or did not answer."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor in a new transaction, committed when the block ends."""

    def misuse(self) -> str | None:
        """Why a transaction of its own cannot be started here and now (a caller's
        transaction is open on the same connection), or None."""
        return None

    def unsupported(self) -> str | None:
        """Why the statements cannot run on this database (another vendor), or None."""
        if self.vendor in VENDORS:
            return None
        return (
            f"the SQL store and lock support PostgreSQL, MariaDB/MySQL and SQLite; "
            f"{self.name} is {self.vendor}"
        )

    def reset(self) -> None:  # noqa: B027  (optional hook)
        """Drop a connection that may be broken after an error, so the next call gets a
        new one."""

    def thread_done(self) -> None:  # noqa: B027  (optional hook)
        """The calling thread will not use the database again for a while (a claim
        keeper's thread): a connection kept per thread can be closed."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release connections; the database is not used afterwards."""


def parts(rows: Sequence[T], size: int) -> Iterable[list[T]]:
    """``rows`` in lists of at most ``size``."""
    for first in range(0, len(rows), size):
        yield list(rows[first : first + size])


def row_source(vendor: str, rows: Sequence[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """A row source for ``rows`` and its parameters: on PostgreSQL one array per column
    (``unnest``), so that the statement's text is the same whatever the number of rows;
    elsewhere a ``VALUES`` list."""
    if vendor == "postgresql":
        columns = [list(column) for column in zip(*rows, strict=True)]
        types = ["text" if isinstance(c[0], str) else "bigint" for c in columns]
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        return f"SELECT * FROM unnest({arrays})", columns
    width = len(rows[0])
    values = ", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(rows))
    return f"VALUES {values}", [v for row in rows for v in row]


def among(vendor: str, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """A condition matching ``column`` against any of ``values``, and its parameters."""
    if vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def pairs(
    vendor: str, rows: Sequence[tuple[Any, Any]], columns: tuple[str, str] = ("entry", "slot_ms")
) -> tuple[str, list[Any]]:
    """A condition matching any of ``rows`` on two columns, and its parameters: row values
    where the planner uses the unique index with them, ORs on MariaDB."""
    first, second = columns
    if vendor == "mysql":
        params = [v for pair in rows for v in pair]
        return " OR ".join([f"({first} = %s AND {second} = %s)"] * len(rows)), params
    source, params = row_source(vendor, rows)
    return f"({first}, {second}) IN ({source})", params


def quoted(vendor: str, name: str) -> str:
    """A column name quoted (``key`` is a reserved word in MySQL)."""
    return f"`{name}`" if vendor == "mysql" else f'"{name}"'


def deadlock(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction may be tried again."""
    for error in (exc, exc.__cause__):
        args = getattr(error, "args", None) or (None,)
        if args[0] in (1213, 1205):  # MySQL's deadlock and lock wait timeout
            return True
    text = str(exc).lower()
    return "deadlock" in text or "could not serialize" in text

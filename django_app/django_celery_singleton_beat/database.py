"""A Django database alias as the library's SQL layer sees it: the SQL slot store's and lock's
statements run on its connection, in transactions of their own.

The statements are those of :mod:`celery_singleton_beat.stores.sql` and
:mod:`celery_singleton_beat.locks.sql`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connections, transaction

from celery_singleton_beat.connections.sql import Cursor, Database


class DjangoDatabase(Database):
    """The database of Django alias ``using``, on this thread's connection to it."""

    def __init__(self, using: str = "default", *, advice: str = "") -> None:
        self.using = using
        self.name = f"database {using!r}"
        self.advice = advice
        """What to do when called inside a transaction on the alias (names the setting or
        argument that gives another alias)."""

    @property
    def vendor(self) -> str:
        return str(connections[self.using].vendor)

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return (DatabaseError,)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
            yield cursor

    def misuse(self) -> str | None:
        if not connections[self.using].in_atomic_block:
            return None
        return (
            f"called inside a transaction on alias {self.using!r}, where its writes would "
            f"stay invisible until that transaction commits; {self.advice}"
        )

    def reset(self) -> None:
        connections[self.using].close_if_unusable_or_obsolete()

    def thread_done(self) -> None:
        connections[self.using].close()

    def close(self) -> None:
        """Close this thread's connection on the alias, unless it is inside a transaction
        (a web request's, with ``ATOMIC_REQUESTS``), which must go on."""
        connection: Any = connections[self.using]
        if not connection.in_atomic_block:
            connection.close()

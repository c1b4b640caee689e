"""The slot store on the Django database: ``singleton_beat_store = "database"``.

For deployments that trust their database and have no Redis: beat's replicas share the
schedule through this app's tables (entries, anchors, slot fences, heartbeats, the runtime
schedule, run-now requests sent, run states), and expiry is measured on the database's
clock, so replicas with skewed clocks agree.

The statements, and every decision around them, are those of
:class:`celery_singleton_beat.stores.sql.SqlSlotStore`, which the SQLAlchemy store runs
too: this module gives them the Django alias's connection and the models' tables.
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.locks.base import LockBackend
from celery_singleton_beat.stores.sql import SqlSlotStore, Tables

from .database import DjangoDatabase
from .locks import DatabaseLock
from .models import (
    EntryRunState,
    Lock,
    ReplicaHeartbeat,
    RunNowSent,
    RuntimeSchedule,
    SlotAnchor,
    SlotEntry,
    SlotFence,
)


def tables() -> Tables:
    """The models' tables."""
    return Tables(
        entries=SlotEntry._meta.db_table,
        anchors=SlotAnchor._meta.db_table,
        fences=SlotFence._meta.db_table,
        heartbeats=ReplicaHeartbeat._meta.db_table,
        schedule=RuntimeSchedule._meta.db_table,
        runs_sent=RunNowSent._meta.db_table,
        run_states=EntryRunState._meta.db_table,
        locks=Lock._meta.db_table,
    )


class DatabaseSlotStore(SqlSlotStore):
    """Schedule state in the database of Django alias ``using`` (default ``"default"``).

    Give it an alias of its own when the application wraps work in transactions on the
    same alias: the store's transactions must commit on their own.
    """

    def __init__(self, using: str = "default") -> None:
        advice = "give the store an alias of its own (singleton_beat_database)"
        super().__init__(DjangoDatabase(using, advice=advice), tables())
        self.using = using

    @classmethod
    def from_config(cls, app: Any, config: Any) -> DatabaseSlotStore:
        """The store on the alias of ``singleton_beat_database`` (default ``"default"``)."""
        using = config.database
        if using not in connections.settings:
            raise ConfigurationError(
                "singleton_beat_database", using, "an alias of settings.DATABASES"
            )
        return cls(using)

    def describe(self) -> str:
        vendor = connections[self.using].vendor
        return f"slot store -> {vendor} database {self.using!r} ({self._where()})"

    def _where(self) -> str:
        settings = connections.settings[self.using]
        return f"{settings.get('HOST') or 'local'}/{settings.get('NAME')}"

    def check(self) -> list[tuple[str, str]]:
        """Whether the database answers, is one the store supports, and has the app's
        migrations applied (the store's tables exist as this version expects them)."""
        connection = connections[self.using]
        refused = self.database.unsupported()
        if refused:
            return [("ERROR", f"{self.name}: {refused}")]
        try:
            connection.ensure_connection()
            missing = _unapplied(connection)
        except DatabaseError as exc:
            connection.close_if_unusable_or_obsolete()
            return [("ERROR", f"{self.name} does not answer: {type(exc).__name__}: {exc}".strip())]
        found = [("OK", f"{self.name} answers ({connection.vendor}, {self._where()})")]
        if missing:
            alias = "" if self.using == "default" else f" --database {self.using}"
            found.append(
                ("ERROR", f"{self.name}: the app's migrations are not applied "
                          f"({', '.join(missing)}); run `manage.py migrate{alias}`")
            )  # fmt: skip
        else:
            found.append(("OK", f"{self.name}: the app's migrations are applied"))
        return found

    def leader_lock(self, owner: str) -> LockBackend:
        return DatabaseLock(using=self.using)


def _unapplied(connection: Any) -> list[str]:
    """This app's migrations not applied on ``connection``'s database, in order."""
    executor = MigrationExecutor(connection)
    label = SlotEntry._meta.app_label
    ours = [key for key in executor.loader.graph.leaf_nodes() if key[0] == label]
    plan = executor.migration_plan(ours)
    return [f"{m.app_label}.{m.name}" for m, _backwards in plan if m.app_label == label]

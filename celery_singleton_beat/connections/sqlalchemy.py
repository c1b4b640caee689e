"""A database through SQLAlchemy: the engine a URL names, the library's tables, their version.

The tables of the SQLAlchemy slot store and lock backend are on their own
:data:`metadata`, so that a project that runs Alembic includes them in its own
autogenerate (``target_metadata = [Base.metadata, metadata]``); a project without Alembic
creates and upgrades them with ``celery -A proj singleton-beat db upgrade``
(:func:`upgrade`). Either way the columns are those the statements of
:mod:`celery_singleton_beat.stores.sql` expect, the same as the Django app's models.

The schema is versioned: :data:`SCHEMA_VERSION` is the version this release needs,
``singleton_beat_schema`` holds the version the database is at (a row :func:`upgrade`
writes), and :data:`UPGRADES` the step from each version to the next. A store or lock
made on a database whose tables are missing, lack a column, or are at an older version
stops at once with :class:`~celery_singleton_beat.errors.SchemaError`, which names the
command to run (:func:`check_schema`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import sqlalchemy as sa

from celery_singleton_beat.connections.sql import Cursor, Database
from celery_singleton_beat.errors import SchemaError

logger = logging.getLogger(__name__)

#: The schema version this release reads and writes.
SCHEMA_VERSION = 1

metadata = sa.MetaData()
"""The library's tables, for a project's Alembic autogenerate."""

#: An integer primary key that SQLite counts up by itself (its BIGINT keys are not rowids).
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_KEY = 255


def _ms(name: str, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger(), nullable=False, **kw)


entries = sa.Table(
    "singleton_beat_entries", metadata,
    sa.Column("name", sa.String(_KEY), primary_key=True),
    _ms("last_ms", comment="newest slot handled (ms since the epoch)"),
    _ms("dispatched", default=0), _ms("skipped", default=0),
    _ms("gone_ms", default=0, comment="when the entry last left the schedule (ms)"),
    comment="celery-singleton-beat: each entry's progress",
)  # fmt: skip
anchors = sa.Table(
    "singleton_beat_anchors", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("entry", sa.String(_KEY), nullable=False),
    _ms("every_ms"), _ms("anchor_ms"),
    sa.UniqueConstraint("entry", "every_ms", name="singleton_beat_anchors_once"),
    comment="celery-singleton-beat: where an interval entry's slots are counted from",
)  # fmt: skip
fences = sa.Table(
    "singleton_beat_fences", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("entry", sa.String(_KEY), nullable=False),
    _ms("slot_ms"),
    sa.Column("token", sa.String(_KEY), nullable=False, default=""),
    _ms("expires_ms", default=0, comment="claim expiry (ms, database clock)"),
    sa.Column("outcome", sa.String(32), nullable=False, default=""),
    _ms("kept_until_ms", index=True),
    sa.UniqueConstraint("entry", "slot_ms", name="singleton_beat_fences_once"),
    comment="celery-singleton-beat: each slot's claim, then how it was decided",
)  # fmt: skip
heartbeats = sa.Table(
    "singleton_beat_heartbeats", metadata,
    sa.Column("replica", sa.String(_KEY), primary_key=True),
    sa.Column("info", sa.Text(), nullable=False),
    _ms("expires_ms", index=True),
    comment="celery-singleton-beat: the live beat replicas",
)  # fmt: skip
schedule = sa.Table(
    "singleton_beat_schedule", metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    _ms("revision", default=0),
    sa.Column("doc", sa.Text(), nullable=False, default="{}"),
    comment="celery-singleton-beat: the runtime schedule (one row)",
)  # fmt: skip
runs_sent = sa.Table(
    "singleton_beat_runs_sent", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    _ms("kept_until_ms", index=True),
    comment="celery-singleton-beat: run-now requests sent",
)  # fmt: skip
run_states = sa.Table(
    "singleton_beat_run_states", metadata,
    sa.Column("entry", sa.String(_KEY), primary_key=True),
    _ms("queued", default=0), _ms("started", default=0), _ms("finished", default=0),
    _ms("overlapped", default=0), _ms("kept_until_ms"),
    comment="celery-singleton-beat: each entry's run state (its overlap policy)",
)  # fmt: skip
locks = sa.Table(
    "singleton_beat_locks", metadata,
    sa.Column("key", sa.String(_KEY), primary_key=True),
    sa.Column("token", sa.String(_KEY), nullable=False, default=""),
    _ms("expires_ms", default=0), _ms("fence", default=0),
    comment="celery-singleton-beat: locks (singleton tasks, the leader lease)",
)  # fmt: skip
counted_slots = sa.Table(
    "singleton_beat_counted_slots", metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("entry", sa.String(_KEY), nullable=False),
    _ms("slot", index=True),
    sa.UniqueConstraint("entry", "slot", name="singleton_beat_counted_slots_once"),
    comment="celery-singleton-beat: slots counted in sqlalchemy-celery-beat's run counts",
)  # fmt: skip
versions = sa.Table(
    "singleton_beat_schema", metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer(), nullable=False),
    comment="celery-singleton-beat: the version of these tables (one row)",
)  # fmt: skip


def _create(connection: sa.Connection) -> None:
    metadata.create_all(connection, checkfirst=True)


#: The step to each version from the one before (1: the tables from nothing).
UPGRADES: dict[int, Callable[[sa.Connection], None]] = {1: _create}

#: The vendor each SQLAlchemy dialect name stands for in the statements.
_VENDORS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}

_engines: dict[tuple[str, int], sa.Engine] = {}
_engines_made = threading.Lock()


def engine_for(url: str) -> sa.Engine:
    """The engine for ``url`` in this process, made once (a forked child makes its own: a
    parent's connections are not shared across a fork). Transactions read committed rows,
    as the statements expect, on PostgreSQL and MariaDB/MySQL alike."""
    key = (url, os.getpid())
    with _engines_made:
        engine = _engines.get(key)
        if engine is None:
            made = sa.make_url(url)
            options: dict[str, Any] = {}
            if made.get_backend_name() in ("postgresql", "mysql", "mariadb"):
                options["isolation_level"] = "READ COMMITTED"
            engine = _engines[key] = sa.create_engine(made, **options)
        return engine


def url_text(engine: sa.Engine) -> str:
    """The engine's URL with its password hidden."""
    return engine.url.render_as_string(hide_password=True)


class SqlAlchemyDatabase(Database):
    """The statements' database through a SQLAlchemy engine: each transaction on a
    connection of its pool, through the driver's own cursor (psycopg, PyMySQL, sqlite3)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.name = f"database {url_text(engine)}"
        self._qmark = engine.dialect.paramstyle == "qmark"
        self.pending_check: str | None = None
        """The tables are checked before the next transaction (they could not be at
        start: the database did not answer); the command their error names."""

    @property
    def vendor(self) -> str:
        return _VENDORS.get(self.engine.dialect.name, self.engine.dialect.name)

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return (self.engine.dialect.loaded_dbapi.Error, sa.exc.SQLAlchemyError)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        if self.pending_check is not None:
            check_schema(self.engine, self.pending_check)
            self.pending_check = None
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                yield _QmarkCursor(cursor) if self._qmark else cursor
            finally:
                cursor.close()
            raw.commit()
        except BaseException:
            try:
                raw.rollback()
            except Exception:
                raw.invalidate()  # broken: the pool makes a new one
            raise
        finally:
            raw.close()

    def reset(self) -> None:
        # after the database stopped answering, the pool's idle connections may be
        # dead too: start again from none
        self.engine.dispose()

    def close(self) -> None:
        self.engine.dispose()


class _QmarkCursor:
    """A cursor of a driver whose placeholders are ``?`` (sqlite3), taking ``%s``."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.cursor.execute(sql.replace("%s", "?"), params)

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> Any:
        return self.cursor.fetchall()


# -- the schema's version -----------------------------------------------------------------


def stored_version(connection: sa.Connection) -> int | None:
    """The version ``singleton_beat_schema`` holds; None without the table or its row."""
    if not sa.inspect(connection).has_table(versions.name):
        return None
    found = connection.execute(sa.select(versions.c.version).where(versions.c.id == 1))
    return found.scalar_one_or_none()


def missing(connection: sa.Connection) -> list[str]:
    """Each table, and each column of a table there, that the statements need and the
    database lacks (``table`` or ``table.column``)."""
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    absent: list[str] = []
    for table in metadata.sorted_tables:
        if table.name not in present:
            absent.append(table.name)
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        absent += [f"{table.name}.{c.name}" for c in table.columns if c.name not in columns]
    return absent


def check_schema(engine: sa.Engine, command: str) -> None:
    """Raise :class:`~celery_singleton_beat.errors.SchemaError` (naming ``command``) unless
    every table and column is there and the stored version is this release's.

    Tables made by a project's own Alembic migration have no version row: their columns
    decide.
    """
    with engine.connect() as connection:
        found = stored_version(connection)
        lacking = missing(connection)
    where = url_text(engine)
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaError(where, found, SCHEMA_VERSION, command)
    if lacking or (found is not None and found < SCHEMA_VERSION):
        raise SchemaError(where, found, SCHEMA_VERSION, command, lacking)


class Upgraded(NamedTuple):
    """What :func:`upgrade` did."""

    before: int | None
    """The version the database was at (None: no version row)."""
    after: int
    created: bool
    """Whether tables were created (False: they were all there, made by Alembic or by an
    earlier ``db upgrade``)."""


def upgrade(engine: sa.Engine) -> Upgraded:
    """Create the tables, or upgrade them to :data:`SCHEMA_VERSION`, in one transaction
    (where the database's DDL is transactional).

    Tables there without a version row (made by Alembic) get the steps their columns
    need, then the row: every step checks what is there first. A database at a newer
    version than this release is left alone: :class:`~celery_singleton_beat.errors.SchemaError`.
    """
    version_now = SCHEMA_VERSION
    with engine.begin() as connection:
        found = stored_version(connection)
        if found is not None and found > version_now:
            raise SchemaError(url_text(engine), found, version_now, "")
        created = found is None and bool(missing(connection))
        for version in range((found or 0) + 1, version_now + 1):
            UPGRADES[version](connection)
        if found is None:
            connection.execute(sa.insert(versions).values(id=1, version=version_now))
        elif found < version_now:
            connection.execute(
                sa.update(versions).where(versions.c.id == 1).values(version=version_now)
            )
    return Upgraded(found, version_now, created)

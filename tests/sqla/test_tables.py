"""The SQLAlchemy store's tables and settings, as a user meets them: ``db upgrade`` from
the command line, beat refusing to start on tables that are missing or outdated, the
Alembic metadata, the store's URL setting."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_singleton_beat.connections import sqlalchemy as tables
from celery_singleton_beat.connections.sqlalchemy import (
    SCHEMA_VERSION,
    check_schema,
    engine_for,
    metadata,
    upgrade,
)
from celery_singleton_beat.errors import ConfigurationError, SchemaError
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.stores.sqlalchemy import SqlAlchemySlotStore
from tests.support.clusters import ROOT

COMMAND = "celery -A tests.sqla.app singleton-beat db upgrade"


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'beat.db'}"
    yield url
    engine_for(url).dispose()


def celery(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``celery -A tests.sqla.app ARGS`` as a user runs it, on the database ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.sqla.app", *args],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TEST_DBURI": url},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_beat_on_a_database_without_the_tables_stops_at_once_naming_the_command(
    sqlite: str,
) -> None:
    started = celery(sqlite, "beat", "-S", "singleton", "--pidfile=", timeout=30)
    assert started.returncode != 0
    output = started.stdout + started.stderr
    assert f"Run `{COMMAND}` to create or upgrade them" in output
    assert "Sending due task" not in output


def test_db_upgrade_creates_the_tables_then_finds_them_current(sqlite: str) -> None:
    first = celery(sqlite, "singleton-beat", "db", "upgrade")
    assert (first.returncode, first.stdout) == (
        0, f"database {sqlite}: tables created at schema version {SCHEMA_VERSION}\n"
    )  # fmt: skip
    again = celery(sqlite, "singleton-beat", "db", "upgrade")
    assert (again.returncode, again.stdout) == (
        0, f"database {sqlite}: tables already at schema version {SCHEMA_VERSION}\n"
    )  # fmt: skip
    with engine_for(sqlite).connect() as connection:
        names = set(sa.inspect(connection).get_table_names())
    assert names == {table.name for table in metadata.sorted_tables}
    check_schema(engine_for(sqlite), COMMAND)


def test_tables_an_alembic_migration_made_are_used_and_stamped_by_db_upgrade(
    sqlite: str,
) -> None:
    engine = engine_for(sqlite)
    metadata.create_all(engine)  # what autogenerate's migration creates: no version row
    check_schema(engine, COMMAND)
    stamped = celery(sqlite, "singleton-beat", "db", "upgrade")
    assert stamped.stdout == (
        f"database {sqlite}: tables found complete, stamped at schema version {SCHEMA_VERSION}\n"
    )


def test_a_table_lacking_a_column_stops_the_store_naming_it_and_the_command(
    sqlite: str,
) -> None:
    engine = engine_for(sqlite)
    upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE singleton_beat_entries DROP COLUMN gone_ms")
    with pytest.raises(SchemaError) as raised:
        check_schema(engine, COMMAND)
    assert str(raised.value) == (
        f"The celery-singleton-beat tables in {sqlite} are at schema version 1, lacking "
        f"singleton_beat_entries.gone_ms; this release needs version 1. Run `{COMMAND}` to "
        f"create or upgrade them (or add celery_singleton_beat.connections.sqlalchemy.metadata "
        f"to your project's Alembic migrations)."
    )


def test_a_later_release_upgrades_the_tables_step_by_step_and_refuses_older_ones(
    sqlite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(sqlite)
    assert upgrade(engine) == (None, SCHEMA_VERSION, True)
    # a release with schema version 2: a column more, and the step that adds it
    later = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(later)
    later.tables["singleton_beat_entries"].append_column(sa.Column("note", sa.String(64)))
    monkeypatch.setattr(tables, "metadata", later)
    monkeypatch.setattr(tables, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    step = lambda connection: connection.exec_driver_sql(  # noqa: E731
        "ALTER TABLE singleton_beat_entries ADD COLUMN note VARCHAR(64)"
    )
    monkeypatch.setitem(tables.UPGRADES, SCHEMA_VERSION + 1, step)
    with pytest.raises(SchemaError, match=r"at schema version 1, lacking singleton_beat_entri"
                                          r"es\.note; this release needs version 2"):  # fmt: skip
        check_schema(engine, COMMAND)
    assert upgrade(engine) == (SCHEMA_VERSION, SCHEMA_VERSION + 1, False)
    check_schema(engine, COMMAND)
    monkeypatch.undo()
    # this release again, on tables a later one upgraded: it refuses to touch them
    with pytest.raises(SchemaError, match="newer than this release"):
        check_schema(engine, COMMAND)
    with pytest.raises(SchemaError, match="newer than this release"):
        upgrade(engine)


def test_the_store_takes_beat_dburi_unless_its_own_url_is_set(sqlite: str, tmp_path: Path) -> None:
    upgrade(engine_for(sqlite))
    app = Celery("proj", broker="memory://")
    app.conf.update(singleton_beat_store="sqlalchemy", beat_dburi=sqlite)
    store = Runtime.of(app).store
    assert isinstance(store, SqlAlchemySlotStore)
    assert store.describe() == f"slot store -> sqlite database {sqlite}"
    own = f"sqlite:///{tmp_path / 'own.db'}"
    upgrade(engine_for(own))
    app.conf.singleton_beat_sqlalchemy_url = own
    assert Runtime.of(app).open_store().describe() == f"slot store -> sqlite database {own}"


def test_the_store_without_a_url_is_refused_naming_the_setting() -> None:
    app = Celery("proj", broker="memory://")
    app.conf.update(singleton_beat_store="sqlalchemy")
    with pytest.raises(ConfigurationError) as raised:
        Runtime.of(app).config  # noqa: B018
    assert raised.value.name == "singleton_beat_sqlalchemy_url"
    assert "(when unset: beat_dburi)" in str(raised.value)


def test_the_password_of_the_url_is_hidden_wherever_the_store_is_named() -> None:
    url = "postgresql+psycopg://app:s3cret@127.0.0.1:1/app"
    store = SqlAlchemySlotStore(url)
    app = Celery("proj", broker="memory://")
    app.conf.update(singleton_beat_store="sqlalchemy", singleton_beat_sqlalchemy_url=url)
    shown = [store.name, store.describe(), str(Runtime.of(app).config.settings)]
    assert [("s3cret" in text, "app:***@" in text or "***@" in text) for text in shown] == [
        (False, True)
    ] * 3

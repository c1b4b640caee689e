"""The test databases the contract suites also run on (the Django app's store and lock):
one parameter per database, marked to use it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

#: Each database's id in a test's name, and its alias in tests/djangoapp/settings.py.
DATABASES = {"sqlite": "default", "postgresql": "postgres", "mariadb": "mariadb"}


def with_databases(*plain: str) -> list[Any]:
    """``plain`` parameters, then ``database-{vendor}`` for every test database."""
    marked = [
        pytest.param(
            f"database-{vendor}", marks=pytest.mark.django_db(transaction=True, databases=[alias])
        )
        for vendor, alias in DATABASES.items()
    ]
    return [*plain, *marked]


def database_alias(param: str) -> str:
    """The alias of a ``database-{vendor}`` parameter, checked to be that vendor's."""
    from django.db import connections

    alias = DATABASES[param.partition("-")[2]]
    assert connections[alias].vendor in ("sqlite", "postgresql", "mysql")
    return alias


class ToPostgres:
    """A database router: django-celery-beat's models (and its change signal) on the
    test's PostgreSQL database (``override_settings(DATABASE_ROUTERS=[ToPostgres()])``)."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return "postgres" if model._meta.app_label == "django_celery_beat" else None

    db_for_write = db_for_read


# -- the SQLAlchemy store's databases ----------------------------------------------------

#: The servers a SQLAlchemy test database is made on (the same as the Django tests').
SQLALCHEMY_SERVERS = {
    "postgresql": "postgresql+psycopg://{user}@{host}:{port}/{name}".format(
        user=os.environ.get("CSB_PG_USER", "postgres"),
        host=os.environ.get("CSB_PG_HOST", "127.0.0.1"),
        port=os.environ.get("CSB_PG_PORT", "5432"),
        name="{name}",
    ),
    "mariadb": "mysql+pymysql://{user}@{host}:{port}/{name}".format(
        user=os.environ.get("CSB_MYSQL_USER", "root"),
        host=os.environ.get("CSB_MYSQL_HOST", "127.0.0.1"),
        port=os.environ.get("CSB_MYSQL_PORT", "3306"),
        name="{name}",
    ),
}
#: The database this process makes on each server (named by its pid, as Django's tests).
SQLALCHEMY_NAME = f"csb_sa_{os.getpid()}"
SQLALCHEMY_VENDORS = ("sqlite", "postgresql", "mariadb")


class SqlAlchemyDatabases:
    """The SQLAlchemy tests' databases: on each server one made on first use, with the
    library's tables (``upgrade``), emptied after each test and dropped at the end; on
    SQLite a file in the test's directory."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def url(self, vendor: str, tmp_path: Path) -> str:
        from celery_singleton_beat.connections.sqlalchemy import engine_for, upgrade

        if vendor == "sqlite":
            url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
            upgrade(engine_for(url))
            return url
        if vendor not in self.made:
            self._create(vendor)
            self.made.append(vendor)
            upgrade(engine_for(self.server(vendor, SQLALCHEMY_NAME)))
        return self.server(vendor, SQLALCHEMY_NAME)

    def server(self, vendor: str, name: str) -> str:
        return SQLALCHEMY_SERVERS[vendor].format(name=name)

    def _create(self, vendor: str) -> None:
        import sqlalchemy as sa

        admin = sa.create_engine(self.server(vendor, "test" if vendor == "postgresql" else ""),
                                 isolation_level="AUTOCOMMIT")  # fmt: skip
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {SQLALCHEMY_NAME}")
            connection.exec_driver_sql(f"CREATE DATABASE {SQLALCHEMY_NAME}")
        admin.dispose()

    def empty(self, url: str) -> None:
        """Delete every row of the library's tables (a test's leftovers)."""
        import sqlalchemy as sa

        from celery_singleton_beat.connections.sqlalchemy import engine_for, metadata

        engine = engine_for(url)
        with engine.begin() as connection:
            for table in metadata.sorted_tables:
                connection.execute(sa.delete(table))
        engine.dispose()

    def drop(self) -> None:
        import sqlalchemy as sa

        from celery_singleton_beat.connections.sqlalchemy import engine_for

        for vendor in self.made:
            engine_for(self.server(vendor, SQLALCHEMY_NAME)).dispose()
            admin = sa.create_engine(
                self.server(vendor, "test" if vendor == "postgresql" else ""),
                isolation_level="AUTOCOMMIT",
            )
            with admin.connect() as connection:
                if vendor == "postgresql":
                    connection.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{SQLALCHEMY_NAME}' AND pid <> pg_backend_pid()"
                    )
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {SQLALCHEMY_NAME}")
            admin.dispose()


def sqlalchemy_database(request: pytest.FixtureRequest, vendor: str) -> str:
    """For a parametrized fixture: the URL of a database of ``vendor`` with the library's
    tables, emptied when the test ends."""
    databases: SqlAlchemyDatabases = request.getfixturevalue("sqlalchemy_databases")
    url = databases.url(vendor, request.getfixturevalue("tmp_path"))
    request.addfinalizer(lambda: databases.empty(url))
    return url

"""The test databases the contract suites also run on (the Django app's store and lock):
one parameter per database, marked to use it."""

from __future__ import annotations

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

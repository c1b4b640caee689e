"""The slot-store contract suite, run against the database store on SQLite, PostgreSQL and
MariaDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connections

from celery_singleton_beat.stores import SlotStore
from django_celery_singleton_beat.stores import DatabaseSlotStore
from tests.stores.test_contract import *  # noqa: F403  (the same tests, collected here again)

DATABASES = ["default", "postgres", "mariadb"]
pytestmark = pytest.mark.django_db(transaction=True, databases=DATABASES)


@pytest.fixture(params=DATABASES, ids=["sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest) -> Iterator[SlotStore]:
    assert connections[request.param].vendor in ("sqlite", "postgresql", "mysql")
    made = DatabaseSlotStore(using=request.param)
    yield made
    made.close()

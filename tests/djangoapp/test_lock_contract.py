"""The lock core's contract suite, run against DatabaseLock on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connections

from celery_singleton_beat.locks import LockBackend
from django_celery_singleton_beat.locks import DatabaseLock
from tests.locks.test_contract import *  # noqa: F403  (the same tests, collected here again)

DATABASES = ["default", "postgres", "mariadb"]
pytestmark = pytest.mark.django_db(transaction=True, databases=DATABASES)


@pytest.fixture(params=DATABASES, ids=["sqlite", "postgresql", "mariadb"])
def lock(request: pytest.FixtureRequest) -> Iterator[LockBackend]:
    assert connections[request.param].vendor in ("sqlite", "postgresql", "mysql")
    backend = DatabaseLock(using=request.param)
    yield backend
    backend.close()

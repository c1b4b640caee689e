"""Fixtures of the Django app's tests: beat replicas on django-celery-beat's tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

from celery_singleton_beat.testing import RedisServer
from tests.support.clusters import BeatCluster
from tests.support.databases import ToPostgres


@pytest.fixture
def dcb_settings() -> dict[str, Any]:
    """The settings of the ``cluster`` replicas; a module overrides this fixture to add
    its own."""
    return {"singleton_beat_schedule_source": "django_celery_beat"}


@pytest.fixture
def cluster(
    tmp_path: Path, three_masters: list[RedisServer], dcb_settings: dict[str, Any]
) -> Iterator[BeatCluster]:
    """Beat replicas of ``tests.djangoapp.dcb_app`` (started by the test) on the test's
    PostgreSQL database, with a broker of their own; the test's django-celery-beat models
    are routed to that database too."""
    broker = RedisServer().start()
    running = BeatCluster(
        tmp_path, "tests.djangoapp.dcb_app", queue="beat-tests", masters=three_masters,
        broker=broker, settings=dcb_settings,
    )  # fmt: skip
    running.base_env["DCB_DB_NAME"] = connections["postgres"].settings_dict["NAME"]
    running.base_env["DJANGO_SETTINGS_MODULE"] = "tests.djangoapp.dcb_settings"
    try:
        with override_settings(DATABASE_ROUTERS=[ToPostgres()]):
            yield running
    finally:
        running.stop()
        broker.stop()

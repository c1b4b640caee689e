"""Running examples/django_project against a test's own Redis server and database."""

from __future__ import annotations

import os
from pathlib import Path

from django.db import connections

from celery_singleton_beat.testing import RedisServer

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"


def demo_env(redis: RedisServer, **settings: str) -> dict[str, str]:
    """Environment for the demo project's processes: broker and masters on ``redis``, a slot
    of ``charge-cards`` every second, and ``settings`` (``DEMO_DB_*`` …) on top."""
    return {
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "demo_site.settings",
        "DEMO_BROKER_URL": f"redis://127.0.0.1:{redis.port}/1",
        "DEMO_REDIS_URLS": redis.url,
        "DEMO_EVERY": "1",
        **settings,
    }


def project_env(redis: RedisServer, db_port: str | None = None, **extra: str) -> dict[str, str]:
    """The demo project on this test's PostgreSQL database (through ``db_port`` if given)."""
    db = connections["postgres"].settings_dict
    return demo_env(
        redis,
        DEMO_DB_ENGINE="postgresql",
        DEMO_DB_NAME=db["NAME"],
        DEMO_DB_USER=db["USER"],
        DEMO_DB_HOST=db["HOST"],
        DEMO_DB_PORT=db_port or str(db["PORT"]),
        **extra,
    )

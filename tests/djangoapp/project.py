"""Running examples/django_project against a test's own Redis server and database."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery_singleton_beat.testing import RedisServer

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
ROOT = PROJECT.parents[1]


def demo_env(redis: RedisServer | None, **settings: str) -> dict[str, str]:
    """Environment for the demo project's processes: broker and masters on ``redis`` (with
    None, an in-memory broker and a master nothing listens on: for commands that stop
    before they connect), a slot of ``charge-cards`` every second, and ``settings``
    (``DEMO_DB_*`` …) on top."""
    return {
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "demo_site.settings",
        "DEMO_BROKER_URL": f"redis://127.0.0.1:{redis.port}/1" if redis else "memory://",
        "DEMO_REDIS_URLS": redis.url if redis else "redis://127.0.0.1:1/0",
        "DEMO_EVERY": "1",
        **settings,
    }


def project_env(redis: RedisServer, db_port: str | None = None, **extra: str) -> dict[str, str]:
    """The demo project on this test's PostgreSQL database (pytest-django's ``postgres``
    alias), through ``db_port`` if given."""
    from django.db import connections

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


def with_settings(env: dict[str, str], **settings: Any) -> dict[str, str]:
    """``env`` with the demo's settings changed: each of ``settings`` (a Django setting,
    ``None`` to set it to None) added to or replacing the demo's, as written in
    ``settings.py`` (see ``tests/djangoapp/demo_settings.py``)."""
    return {
        **env,
        "PYTHONPATH": os.pathsep.join([env["PYTHONPATH"], str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "tests.djangoapp.demo_settings",
        "DEMO_SETTINGS": json.dumps(settings),
    }

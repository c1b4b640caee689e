"""The Django example project migrates on every supported Django (>= 4.2)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import django

from tests.djangoapp.project import PROJECT


def test_the_example_project_migrates_on_this_django_with_sqlite_in_wal_mode(
    tmp_path: Path,
) -> None:
    database = tmp_path / "demo.sqlite3"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "demo_site.settings",
        "DEMO_DB_NAME": str(database),
        "DEMO_DB_ENGINE": "sqlite",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"Django {django.__version__}: {done.stderr[-2000:]}"
    assert "Applying singleton_beat.0001_initial... OK" in done.stdout
    with sqlite3.connect(database) as db:
        applied = db.execute(
            "SELECT name FROM django_migrations WHERE app = 'singleton_beat'"
        ).fetchall()
        mode = db.execute("PRAGMA journal_mode").fetchone()
    from django_celery_singleton_beat import migrations

    shipped = sorted(p.stem for p in Path(migrations.__file__).parent.glob("0*.py"))
    assert sorted(name for (name,) in applied) == shipped
    assert mode == ("wal",)

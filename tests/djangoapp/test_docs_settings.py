"""The Django app's settings are all on docs/django.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from django_celery_singleton_beat.conf import AppSettings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "django.md"


def test_every_app_setting_is_documented() -> None:
    text = PAGE.read_text()
    for field in dataclasses.fields(AppSettings):
        name = f"SINGLETON_BEAT_{field.name.upper()}"
        assert f"`{name}`" in text, f"{name} is missing from docs/django.md"

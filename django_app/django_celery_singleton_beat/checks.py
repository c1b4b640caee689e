"""Django system checks: a setting named like ours that nothing reads is reported.

This app reads ``SINGLETON_BEAT_*`` from Django's settings; the library reads Celery's
``singleton_beat_*`` settings, written ``CELERY_SINGLETON_BEAT_*`` in Django's settings
with ``app.config_from_object("django.conf:settings", namespace="CELERY")``. A name in the
wrong family (``CELERY_SINGLETON_BEAT_RETENTION``) or misspelt (``SINGLETON_BEAT_RETENTON``)
is reported here, with the name meant (the same guess as beat's own refusal:
:func:`celery_singleton_beat.settings.config.closest`), at ``manage.py check``, ``runserver`` and
``migrate``, before any beat replica refuses to start over it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings as django_settings
from django.core import checks

from celery_singleton_beat.settings.config import app_setting_meant, closest, setting_names

from .conf import AppSettings

APP_PREFIX = "SINGLETON_BEAT_"
CELERY_PREFIX = "CELERY_SINGLETON_BEAT_"


def app_setting_names() -> frozenset[str]:
    """This app's Django settings."""
    return frozenset(f"{APP_PREFIX}{f.name.upper()}" for f in dataclasses.fields(AppSettings))


def celery_setting_names() -> frozenset[str]:
    """The library's Celery settings as Django settings (``namespace="CELERY"``)."""
    return frozenset(f"CELERY_{name.upper()}" for name in setting_names())


def unknown_settings(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    """A warning for each ``SINGLETON_BEAT_*``/``CELERY_SINGLETON_BEAT_*`` setting that
    nothing reads, with the setting it probably means."""
    ours, celery = app_setting_names(), celery_setting_names()
    found: list[checks.CheckMessage] = []
    for name in sorted(n for n in dir(django_settings) if n.isupper()):
        if not name.startswith((APP_PREFIX, CELERY_PREFIX)) or name in ours | celery:
            continue
        found.append(
            checks.Warning(
                f"{name} is not a celery-singleton-beat setting: {_effect(name)}.",
                hint=_hint(name, ours, celery),
                id="singleton_beat.W001",
            )
        )
    return found


def _effect(name: str) -> str:
    if name.startswith(CELERY_PREFIX):
        return "beat, its workers and `celery singleton-beat` refuse to start"
    return "it is ignored"


def _hint(name: str, ours: frozenset[str], celery: frozenset[str]) -> str:
    if name.startswith(CELERY_PREFIX):
        misplaced = app_setting_meant(name)
        if misplaced is not None:
            meant, why = misplaced
            return f"Did you mean {meant}? {why}"
    else:
        same = "CELERY_" + name
        if same in celery:
            return (
                f"Did you mean {same}? Celery settings are read from Django's settings "
                f'with config_from_object("django.conf:settings", namespace="CELERY").'
            )
    close = closest(name, ours | celery)
    if close:
        return f"Did you mean {close}?"
    return (
        f"The Django app's settings are {', '.join(sorted(ours))}; the Celery settings are "
        f"listed on the configuration page."
    )


def scheduler_alias(app_configs: Any = None, **_: Any) -> list[checks.CheckMessage]:
    """A warning for ``CELERY_BEAT_SCHEDULER = "singleton"`` beside django-celery-beat:
    ``celery beat`` resolves the short name through its entry points, but
    django-celery-beat's admin imports the setting as a path, and its periodic task pages
    fail on it."""
    from django.apps import apps  # noqa: PLC0415

    chosen = getattr(django_settings, "CELERY_BEAT_SCHEDULER", None)
    if chosen != "singleton" or not apps.is_installed("django_celery_beat"):
        return []
    return [
        checks.Warning(
            "CELERY_BEAT_SCHEDULER = 'singleton' makes django-celery-beat's admin fail: it "
            "imports the setting as a path, which the short name is not.",
            hint=(
                "Set CELERY_BEAT_SCHEDULER = 'celery_singleton_beat.Scheduler' (the same "
                "scheduler; `celery beat -S singleton` keeps working)."
            ),
            id="singleton_beat.W002",
        )
    ]

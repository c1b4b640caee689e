"""The app's configuration (label ``singleton_beat``): at ``ready()``, its checks, the
recorder, the workers' run states and the hourly prune entry are wired in."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.utils.translation import gettext_lazy as _

PRUNE_ENTRY = "singleton_beat.prune"


class SingletonBeatConfig(AppConfig):
    name = "django_celery_singleton_beat"
    label = "singleton_beat"
    verbose_name = _("Celery singleton beat")
    default_auto_field = "django.db.models.BigAutoField"

    recorder: Any = None

    def ready(self) -> None:
        from celery import signals  # noqa: PLC0415
        from django.core import checks  # noqa: PLC0415

        from celery_singleton_beat.ops import cluster as overview  # noqa: PLC0415
        from celery_singleton_beat.tasks import overlap  # noqa: PLC0415

        from . import checks as app_checks  # noqa: PLC0415
        from . import conf, recorder  # noqa: PLC0415

        checks.register(app_checks.unknown_settings, checks.Tags.compatibility)
        checks.register(app_checks.scheduler_alias, checks.Tags.compatibility)
        settings = conf.load()  # a bad setting fails here, at start-up
        overview.RUNTIME_SOURCES.append(recorder.longest_runtime)
        overlap.install()  # workers record when beat-sent runs start and end
        if apps.is_installed("django_celery_beat"):
            from .sources import announce_changes  # noqa: PLC0415

            announce_changes()  # replicas on its tables follow a save at their next tick
        if settings.record:
            self.recorder = recorder.Recorder(settings)
            self.recorder.connect()
        if settings.retention is not None:
            signals.beat_init.connect(add_prune_entry, weak=False)


def add_prune_entry(sender: Any = None, **_: Any) -> None:
    """With ``SINGLETON_BEAT_RETENTION`` set, beat prunes old records every hour."""
    from celery.schedules import crontab  # noqa: PLC0415

    schedule = sender.app.conf.beat_schedule
    schedule.setdefault(
        PRUNE_ENTRY,
        {"task": PRUNE_ENTRY, "schedule": crontab(minute=17), "options": {"expires": 3000}},
    )

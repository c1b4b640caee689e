"""``manage.py demo_schedule``: the demo's rows in django-celery-beat's tables.

Creates the rows that are missing and leaves the others as they are, so that what an
operator changed in the admin survives a restart of the demo. ``--reset`` puts them back.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create the demo's periodic tasks in django-celery-beat's tables (missing ones only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="store_true", help="put changed rows back")

    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        if not settings.DJANGO_CELERY_BEAT:
            raise CommandError(
                "django-celery-beat is not installed: pip install "
                "'celery-singleton-beat[django-celery-beat]' (make demo-django does)"
            )
        # optional: the demo runs without it on a Django it does not support
        from django_celery_beat.models import (  # noqa: PLC0415
            CrontabSchedule,
            IntervalSchedule,
            PeriodicTask,
            PeriodicTasks,
        )

        every, _ = IntervalSchedule.objects.get_or_create(
            every=max(1, round(settings.EVERY * 3)), period=IntervalSchedule.SECONDS
        )
        nightly, _ = CrontabSchedule.objects.get_or_create(
            minute="30", hour="2", day_of_week="*", day_of_month="*", month_of_year="*",
            timezone="Europe/Berlin",
        )  # fmt: skip
        rows = {
            "send-reminders": {
                "task": "billing.send_reminders", "interval": every, "crontab": None,
                "kwargs": json.dumps({"days_overdue": 7}), "enabled": True,
            },
            "nightly-report": {
                "task": "billing.nightly_report", "crontab": nightly, "interval": None,
                "enabled": True,
            },
        }  # fmt: skip
        for name, fields in rows.items():
            if reset:
                PeriodicTask.objects.update_or_create(name=name, defaults=fields)
                self.stdout.write(f"periodic task {name!r}: reset")
                continue
            _row, created = PeriodicTask.objects.get_or_create(name=name, defaults=fields)
            self.stdout.write(f"periodic task {name!r}: {'created' if created else 'kept'}")
        PeriodicTasks.update_changed()

"""``manage.py singleton_beat_prune --older-than 30d``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_celery_singleton_beat import conf
from django_celery_singleton_beat.prune import prune


class Command(BaseCommand):
    help = "Delete task runs and slot decisions older than a cut-off."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            help=f"age to keep ({conf.DURATION_FORM}); default: SINGLETON_BEAT_RETENTION",
        )
        parser.add_argument("--database", help="database alias (default: SINGLETON_BEAT_DATABASE)")

    def handle(self, *args: Any, **options: Any) -> None:
        settings = conf.load()
        try:
            if options["older_than"] is not None:
                age = conf.parse_duration("--older-than", options["older_than"])
            elif settings.retention is not None:
                age = settings.retention
            else:
                raise CommandError(
                    "give --older-than (such as 30d) or set SINGLETON_BEAT_RETENTION"
                )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        deleted = prune(age, using=options["database"] or settings.database)
        self.stdout.write(
            ", ".join(f"{count} {what}" for what, count in deleted.items())
            + f" deleted (older than {age})"
        )

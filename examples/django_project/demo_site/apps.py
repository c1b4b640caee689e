"""The project's own app: SQLite in WAL mode on every connection.

Django >= 5.1 could say this with ``OPTIONS["init_command"]``; a ``connection_created``
receiver does it on every Django the library supports (>= 4.2).
"""

from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def sqlite_wal(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Beat replicas, the worker and the web server write to one SQLite file: with WAL,
    readers do not block the writer."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL;")


class DemoSiteConfig(AppConfig):
    name = "demo_site"
    label = "demo_site"

    def ready(self) -> None:
        connection_created.connect(sqlite_wal, dispatch_uid="demo_site.sqlite_wal")

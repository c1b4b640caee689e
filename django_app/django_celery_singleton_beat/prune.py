"""Deleting records older than a cut-off (``singleton_beat_prune`` and the hourly task)."""

from __future__ import annotations

import datetime as dt

from django.db.models import Model, QuerySet

from .models import SlotDispatch, TaskRun

CHUNK = 5_000


def prune(older_than: dt.timedelta, using: str = "default") -> dict[str, int]:
    """Delete runs that started, and slot decisions made, before ``now - older_than``."""
    cutoff = dt.datetime.now(dt.timezone.utc) - older_than
    return {
        "task runs": _delete(TaskRun.objects.using(using).filter(started_at__lt=cutoff)),
        "slot dispatches": _delete(SlotDispatch.objects.using(using).filter(decided_at__lt=cutoff)),
    }


def _delete(rows: QuerySet[Model]) -> int:
    """Delete in chunks so that a large backlog never holds one long transaction."""
    total = 0
    while True:
        ids = list(rows.values_list("pk", flat=True)[:CHUNK])
        if not ids:
            return total
        total += rows.model._default_manager.using(rows.db).filter(pk__in=ids).delete()[0]

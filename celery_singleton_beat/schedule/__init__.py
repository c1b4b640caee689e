"""The runtime schedule: entries added, paused, resumed and run now while beat runs.

The functions (:mod:`.api`) edit one document kept in the app's slot store
(:mod:`celery_singleton_beat.sources.schedule_document`), which every replica reading the
``"runtime"`` source follows::

    from celery_singleton_beat import schedule

    schedule.add(app, "report", "reports.build", every=60)
    schedule.pause(app, "report", by="ops")
    schedule.backfill(app, "report", start, end)  # each slot in the range that did not run
"""

from __future__ import annotations

from celery_singleton_beat.schedule.api import (
    API_TIMEOUT,
    RUN_NOW_DELAY_MS,
    RUN_NOW_PENDING_MS,
    add,
    entries,
    pause,
    paused,
    remove,
    resume,
    run_now,
    run_requests,
    spec_for,
    update,
)
from celery_singleton_beat.schedule.backfills import backfill, backfill_progress, backfill_requests
from celery_singleton_beat.sources.schedule_document import RUN_NOW, RUN_NOW_KEPT_MS, to_beat

__all__ = [
    "API_TIMEOUT",
    "RUN_NOW",
    "RUN_NOW_DELAY_MS",
    "RUN_NOW_KEPT_MS",
    "RUN_NOW_PENDING_MS",
    "add",
    "backfill",
    "backfill_progress",
    "backfill_requests",
    "entries",
    "pause",
    "paused",
    "remove",
    "resume",
    "run_now",
    "run_requests",
    "spec_for",
    "to_beat",
    "update",
]

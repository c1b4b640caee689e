"""The worker side of the overlap policy: each tracked run's start and end, in the store.

Beat marks a slot of an entry with an overlap policy with a header
(:data:`~celery_singleton_beat.core.overlap.TRACK_HEADER`); the worker that runs it
raises the entry's ``started`` and ``finished`` run states (see
:mod:`celery_singleton_beat.core.overlap` for the rule beat decides with).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from celery_singleton_beat.core.overlap import RETENTION, TRACK_HEADER, parse_slot
from celery_singleton_beat.core.schema import Header
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.stores.base import RunStates
from celery_singleton_beat.tasks import failures

logger = logging.getLogger(__name__)


def install() -> None:
    """Record when each beat-sent run of an entry with an overlap policy starts and ends,
    and count the failed runs of entries with ``pause_on_failure``
    (:mod:`.failures`); the worker must call this once, e.g. in the module that makes the
    Celery app (the Django app's ``ready()`` does)."""
    failures.install()
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="singleton_beat_overlap")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="singleton_beat_overlap")


def _on_prerun(sender: Any = None, **_: Any) -> None:
    _record(sender, "started")


def _on_postrun(sender: Any = None, **_: Any) -> None:
    _record(sender, "finished")


def _record(task: Any, field: str) -> None:
    try:
        headers = task.request.headers or {}
        if not headers.get(TRACK_HEADER):
            return
        slot = parse_slot(str(headers[Header.SLOT]))
        entry = str(headers[Header.ENTRY])
        states: RunStates = Runtime.of(task.app).store
        states.raise_run_states([(entry, field, slot)], RETENTION)
    except Exception as exc:  # recording never fails the task
        logger.warning("singleton beat: the run state could not be written: %s", exc)

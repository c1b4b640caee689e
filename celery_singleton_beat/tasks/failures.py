"""The worker side of ``pause_on_failure``: count an entry's consecutive failed runs, and
pause the entry when they reach its limit.

Beat marks each slot of an entry with ``pause_on_failure: N`` with the header
:attr:`~celery_singleton_beat.core.schema.Header.PAUSE_ON_FAILURE` (``N``). The worker that
runs the slot keeps the count in the runtime schedule document, beside the pauses
(``doc["failures"][entry]``), and writes it under the document's edit lock: a run that
fails raises it, one that succeeds clears it, and the failure that reaches ``N`` pauses
the entry in the same edit, with its reason. Each slot is counted once (a failure of a
slot already counted, a copy re-sent after a take-over, changes nothing), and resuming
the entry clears the count::

    worker A: slot 10:00 fails ── edit: failures 1
    worker B: slot 10:01 fails ── edit: failures 2
    worker A: slot 10:02 fails ── edit: failures 3, paused {by: pause_on_failure, reason}
    replicas: read the new revision ── send nothing for the entry until it is resumed

A task that retries is counted when its last attempt fails (Celery's ``task_failure``
signal), not at each retry.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

from celery import signals

from celery_singleton_beat.core.schema import PAUSED_ON_FAILURE as PAUSED_BY
from celery_singleton_beat.core.schema import Header
from celery_singleton_beat.observe import events
from celery_singleton_beat.sources.schedule_document import ScheduleDocument

logger = logging.getLogger(__name__)

#: The longest error text kept in a pause's reason.
REASON_CHARS = 300


def install() -> None:
    """Count the failed runs of entries with ``pause_on_failure`` (called by
    :func:`celery_singleton_beat.overlap.install`, which the worker calls once)."""
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="singleton_beat_failures")
    signals.task_success.connect(_on_success, weak=False, dispatch_uid="singleton_beat_failures")


class CountedRun(NamedTuple):
    """A beat-sent run that asks to be counted (``pause_on_failure``)."""

    entry: str
    slot: str
    """The slot's label."""
    limit: int
    """The failures in a row that pause the entry."""


def _slot_of(task: Any) -> CountedRun | None:
    """The entry, slot label and failure limit of a beat-sent run that asks to be counted."""
    headers = getattr(task.request, "headers", None) or {}
    limit = headers.get(Header.PAUSE_ON_FAILURE.value)
    entry, slot = headers.get(Header.ENTRY.value), headers.get(Header.SLOT.value)
    if not limit or entry is None or slot is None:
        return None
    return CountedRun(str(entry), str(slot), int(limit))


def _on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    try:
        found = _slot_of(sender)
        if found is None:
            return
        entry, slot, limit = found
        error = f"{type(exception).__name__}: {exception}"[:REASON_CHARS]
        paused = ScheduleDocument.shared(sender.app).edit(
            lambda doc: count_failure(doc, entry, slot, limit, error)
        )
    except Exception as exc:  # counting never fails the task
        logger.warning("singleton beat: the failed run could not be counted: %s", exc)
        return
    if paused is not None:
        logger.warning("singleton beat: entry %r paused: %s", entry, paused["reason"])
        events.emit(events.EntryPaused(entry=entry, by=PAUSED_BY, reason=paused["reason"]))


def _on_success(sender: Any = None, **_: Any) -> None:
    try:
        found = _slot_of(sender)
        if found is None:
            return
        store = ScheduleDocument.shared(sender.app)
        _rev, doc = store.read()
        if found.entry in doc.get("failures", {}):  # an edit only when there is a count
            store.edit(lambda doc: doc.get("failures", {}).pop(found.entry, None))
    except Exception as exc:
        logger.warning("singleton beat: the successful run could not be counted: %s", exc)


def count_failure(
    doc: dict[str, Any], entry: str, slot: str, limit: int, error: str
) -> dict[str, Any] | None:
    """Count a failed run of ``entry`` in the runtime schedule document; at ``limit``
    consecutive failures pause it. Returns the pause it made, if any."""
    failures = doc.setdefault("failures", {})
    count = failures.get(entry, {"count": 0, "slot": None})
    if count["slot"] == slot:
        return None
    failures[entry] = {"count": count["count"] + 1, "slot": slot, "error": error}
    if failures[entry]["count"] < limit or entry in doc["paused"]:
        return None
    reason = f"{failures[entry]['count']} consecutive failed runs, the last of slot {slot}: {error}"
    pause = {"by": PAUSED_BY, "at": round(time.time() * 1000), "reason": reason}
    doc["paused"][entry] = pause
    return pause

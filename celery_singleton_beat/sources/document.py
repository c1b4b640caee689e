"""Runtime entries and controls (:mod:`celery_singleton_beat.schedule.api`) as sources.

- :class:`RuntimeSource` (``"runtime"`` in ``singleton_beat_schedule_source``): the entries
  added with :func:`~celery_singleton_beat.schedule.api.add`;
- :class:`ControlSource` (always on): the runs asked for with
  :func:`~celery_singleton_beat.schedule.api.run_now`, the pauses set with
  :func:`~celery_singleton_beat.schedule.api.pause` and the backfills asked for with
  :func:`~celery_singleton_beat.schedule.backfill`, for an entry of any source.

Both read one document in the app's slot store; the version is its revision, read in the
same round trip as the replica's heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from celery_singleton_beat.core.slots import OnceSlots, SlotSchedule
from celery_singleton_beat.sources.base import EntrySpec, ScheduleSource
from celery_singleton_beat.sources.schedule_document import (
    RUN_NOW,
    RUN_NOW_KEPT_MS,
    RunMarks,
    ScheduleDocument,
    to_beat,
)

if TYPE_CHECKING:
    from celery import Celery


class _Revisioned(ScheduleSource):
    """A source whose version is the runtime schedule's revision: a heartbeat that read
    a newer one hints at the change, so that it is read in the same tick."""

    def __init__(self, app: Celery) -> None:
        super().__init__(app)
        self.store = ScheduleDocument.shared(app)
        self._known: int | None = None

    def version(self) -> Hashable:
        self._known = self.store.revision()
        return self._known

    def hinted(self) -> bool:
        seen = self.store.seen()
        if seen is None or seen == self._known:
            return False
        self._known = seen
        return True


class RuntimeSource(_Revisioned):
    """Entries added with :func:`celery_singleton_beat.schedule.api.add`."""

    name = "runtime"

    def entries(self) -> Mapping[str, EntrySpec]:
        _rev, doc = self.store.read()
        return {name: to_beat(spec) for name, spec in doc["entries"].items()}

    def close(self) -> None:
        self.store.close()


class ControlSource(_Revisioned):
    """Runs asked for now (an entry ``{name}@run-now:{id}`` each) and paused names."""

    name = "control"

    def __init__(self, app: Celery) -> None:
        super().__init__(app)
        self.marks = RunMarks(self.store, 86400.0)
        self.paused: dict[str, str] = {}
        """The paused names at the last read, each with who paused it (the pause's ``by``)."""
        self.backfills: dict[str, dict[str, Any]] = {}
        """The backfill requests at the last read, by id (see :mod:`..beat.backfill`)."""

    def entries(self) -> Mapping[str, EntrySpec]:
        _rev, doc = self.store.read()
        self.paused = {name: str(p.get("by") or "") for name, p in doc["paused"].items()}
        self.backfills = dict(doc["backfills"])
        found: dict[str, EntrySpec] = {}
        oldest = time.time() * 1000 - RUN_NOW_KEPT_MS
        for run_id, run in doc["runs"].items():
            if run["at"] > oldest:
                found[f"{run['entry']}{RUN_NOW}{run_id}"] = {
                    "task": run["task"], "args": run["args"], "kwargs": run["kwargs"],
                    "options": run["options"],
                    "schedule": SlotSchedule(OnceSlots(run["at"]), app=self.app),
                }  # fmt: skip
        return found

    def published(self, name: str, slot: int, sent_at: float) -> None:
        if RUN_NOW in name:
            self.marks.mark(name.rpartition(RUN_NOW)[2])

    def close(self) -> None:
        self.store.close()

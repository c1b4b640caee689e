"""The ``beat_schedule`` setting as a schedule source: Celery's own schedule, as code.

Its entries never change while beat runs; the version is a constant.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from celery_singleton_beat.sources.base import EntrySpec, ScheduleSource


class BeatScheduleSource(ScheduleSource):
    """The app's ``beat_schedule`` (the default source)."""

    name = "beat_schedule"

    def version(self) -> Hashable:
        return 0

    def entries(self) -> Mapping[str, EntrySpec]:
        """The setting itself (read, never changed: a large schedule is not copied)."""
        return self.app.conf.beat_schedule or {}

"""When a replica reads its schedule source again while beat runs.

The scheduler asks :class:`SourceWatcher` at most once per :data:`POLL_EVERY` whether the
source's version moved, and hands the entries it read to
:func:`~celery_singleton_beat.core.replan.compare`.

A version is read again shortly (:data:`AGAIN_AFTER`) after it changed: django-celery-beat
bumps its version before the row itself is written, so a read right between the two would
miss the row::

    editor:    bump version ─────── save row
    replica:            version? new ── read rows (old) ── (a moment later) read rows (new)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping

from celery_singleton_beat.sources.base import EntrySpec, ScheduleSource

logger = logging.getLogger(__name__)

#: Seconds between two reads of a source's version: a change is followed within this plus
#: the time to read the source (a version must be cheap: one single-row query, or read
#: along with the heartbeat), or at the next tick when the source was told of it
#: (:meth:`~celery_singleton_beat.sources.base.ScheduleSource.hinted`).
POLL_EVERY = 1.0
#: Seconds from a read that found a new version to the read made once more after it.
AGAIN_AFTER = 0.25


class SourceWatcher:
    """Reads a source's entries when its version changed (and once more after that)."""

    def __init__(
        self, source: ScheduleSource, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.source = source
        self.monotonic = monotonic
        """The clock :meth:`poll` is given times of (seconds)."""
        self.version: Hashable = None
        self._next_poll = 0.0
        self._again = False
        self._failing = False

    @property
    def next_poll(self) -> float:
        """When (monotonic seconds) the version is to be read next."""
        return self._next_poll

    def defer(self, until: float) -> None:
        """Read the version no earlier than ``until`` (monotonic seconds)."""
        self._next_poll = max(self._next_poll, until)

    def first(self) -> Mapping[str, EntrySpec]:
        """The entries at start; errors propagate (a bad source stops beat at start)."""
        self.version = self.source.version()
        self._next_poll = self.monotonic() + POLL_EVERY
        return self.source.entries()

    def poll(self, monotonic: float) -> Mapping[str, EntrySpec] | None:
        """The entries, when they may have changed since the last read; else None."""
        if monotonic < self._next_poll and not self.source.hinted():
            return None
        self._next_poll = monotonic + POLL_EVERY
        try:
            version = self.source.version()
            if version == self.version and not self._again:
                return None
            specs = self.source.entries()
        except Exception as exc:
            if not self._failing:
                logger.error(
                    "singleton beat: the schedule source %r cannot be read, keeping the "
                    "entries read last: %s: %s", self.source.name, type(exc).__name__, exc,
                )  # fmt: skip
            self._failing = True
            return None
        if self._failing:
            logger.warning("singleton beat: the schedule source %r answers again", self.source.name)
        self._failing = False
        self._again = version != self.version
        if self._again:  # the row a new version announces may be written only just after
            self._next_poll = monotonic + AGAIN_AFTER
        self.version = version
        return specs

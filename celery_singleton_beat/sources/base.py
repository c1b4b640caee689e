"""The schedule-source contract: where a replica's entries come from, and when they change.

A source hands the scheduler its entries in ``beat_schedule`` form (``task``,
``schedule``, ``args``, ``kwargs``, ``options``, per-entry settings under
``options["singleton_beat"]``) and a *version* that is cheap to read. The scheduler reads
the version at most once per second and the entries only when the version changed, so a
source backed by a database costs one small query per second, not one per entry.

Every replica reads the same source and builds the same slots from it; what differs
between replicas is only *when* each one sees a change (within a poll interval)::

    editor:    save "report" every 10 s ── version 7 -> 8
    replica A: version 8? yes ── entries() ── "report" fires from its next slot
    replica B:       version 8? yes ── entries() ── same slots; the fences decide

Rules a source follows:

- entry names are stable: a slot's fence is ``fire:{name}:{slot}``, so an entry renamed
  is a new entry, and one whose schedule changed keeps the slots it already dispatched;
- a disabled entry is left out of :meth:`~ScheduleSource.entries`; one that is only paused
  is returned with ``options["singleton_beat"]["paused"] = True`` (its missed slots then
  follow its misfire policy when it resumes);
- :meth:`~ScheduleSource.version` never returns the same value for two different sets of
  entries; it may change without the entries changing (a spurious re-read costs a query);
- errors raised by the source are logged by the scheduler, which keeps the entries it
  has; they never stop the beat loop.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

#: An entry as in ``beat_schedule``: ``{"task": ..., "schedule": ..., "options": {...}}``.
EntrySpec = Mapping[str, Any]


class ScheduleSource(abc.ABC):
    """Entries for the scheduler, and a cheap version that changes when they do."""

    #: The name used in ``singleton_beat_schedule_source`` and in error messages.
    name: str = "source"

    def __init__(self, app: Celery) -> None:
        self.app = app

    @abc.abstractmethod
    def version(self) -> Hashable:
        """A value that changes whenever :meth:`entries` would return something else.

        Called about once a second on every replica (sooner after :meth:`hinted`): it
        must be cheap (one small query, one key read, a constant for a source that never
        changes).
        """

    def hinted(self) -> bool:
        """Whether the source was told of a change since the last call, without asking
        anyone (a notice already received): then :meth:`version` is read at once rather
        than at the next poll. Called at every tick of the scheduler; False by default."""
        return False

    @abc.abstractmethod
    def entries(self) -> Mapping[str, EntrySpec]:
        """Every enabled entry, by name, in ``beat_schedule`` form.

        Called at start and after :meth:`version` changed. Raising leaves the scheduler
        on the entries it read last.
        """

    def published(self, name: str, slot: int, sent_at: float) -> None:
        """A slot of ``name`` was published (``slot`` in ms since the epoch, ``sent_at``
        in seconds); see :meth:`published_many`."""
        return

    def published_many(self, runs: Sequence[tuple[str, int]], sent_at: float) -> None:
        """The slots ``runs`` (entry name, slot in ms) were published at ``sent_at``.

        Called by the replica that published them, before their fences are marked done:
        a slot can be told twice (its replica died before marking it, and another sent
        it again with the same task id), so a source that keeps run counts counts each
        slot once. Errors are logged and ignored. By default, :meth:`published` per slot.
        """
        for name, slot in runs:
            self.published(name, slot, sent_at)

    def close(self) -> None:
        """Release what the source holds (connections); called when beat stops."""
        return

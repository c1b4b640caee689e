"""Following a schedule source while beat runs: when to read it, and what a change means.

The scheduler asks :class:`SourceWatcher` at most once per :data:`POLL_EVERY` whether the
source's version moved, and hands the entries it read to :func:`compare`, which sorts the
new plans against the running ones:

- *added* (a name not scheduled before, or scheduled again after being disabled) and
  *changed* (its slots differ: another schedule, timezone or bounds) plans start from
  their first slot after the moment the change is seen; the slots an entry dispatched
  keep their fences (``fire:{name}:{slot}``), so a slot both schedules share is not sent
  twice;
- *kept* plans (same slots) keep their progress and take the new task, arguments,
  options and policy (a pause or a resume);
- *removed* plans stop.

A version is read again shortly (:data:`AGAIN_AFTER`) after it changed: django-celery-beat
bumps its version before the row itself is written, so a read right between the two would
miss the row::

    editor:    bump version ─────── save row
    replica:            version? new ── read rows (old) ── (a moment later) read rows (new)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from celery_singleton_beat.entries import Plan
from celery_singleton_beat.schedule import RUN_NOW
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

    def __init__(self, source: ScheduleSource) -> None:
        self.source = source
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
        self._next_poll = time.monotonic() + POLL_EVERY
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


@dataclasses.dataclass
class Changes:
    """How a newly read schedule differs from the running plans."""

    plans: dict[str, Plan]
    added: list[Plan] = dataclasses.field(default_factory=list)
    changed: list[Plan] = dataclasses.field(default_factory=list)
    resumed: list[Plan] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    updated: int = 0

    @property
    def fresh(self) -> list[Plan]:
        """Plans that start from their next slot after now."""
        return self.added + self.changed

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.resumed or self.removed or self.updated)


def compare(running: Mapping[str, Plan], built: Mapping[str, Plan]) -> Changes:
    """Sort ``built`` (plans from a new read) against the ``running`` ones."""
    changes = Changes(plans={})
    for name, plan in built.items():
        old = running.get(name)
        if old is None:
            changes.added.append(plan)
        elif _slots_of(old) != _slots_of(plan):
            changes.changed.append(plan)
        else:
            changes.plans[name] = _keep(changes, old, plan)
            continue
        changes.plans[name] = plan
    changes.removed = sorted(set(running) - set(built))
    return changes


def _keep(changes: Changes, old: Plan, new: Plan) -> Plan:
    """The running plan, with the new entry's task, arguments, options and policy."""
    if old.policy.paused and not new.policy.paused:
        changes.resumed.append(old)
    if old.entry is not new.entry:
        changes.updated += _differs(old, new)
    old.entry, old.policy = new.entry, new.policy
    return old


def _slots_of(plan: Plan) -> str:
    return plan.slots.fingerprint()


def _differs(old: Plan, new: Plan) -> int:
    a, b = old.entry, new.entry
    same = (a.task, a.args, a.kwargs, a.options, old.policy) == (
        b.task, b.args, b.kwargs, b.options, new.policy,
    )  # fmt: skip
    return 0 if same else 1


class UnknownTasks:
    """Warns of entries whose task this process does not register, once per entry and
    task: at start, and when an entry appears or changes its task.

    A warning, not a refusal: a task may be registered on the workers alone (beat sends
    it by name). Where no worker registers it either, each of its messages is discarded.
    A run asked for now counts as its entry.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._warned: set[tuple[str, str]] = set()

    def warn(self, plans: Iterable[Plan]) -> None:
        for plan in plans:
            task = plan.entry.task
            key = (plan.name.partition(RUN_NOW)[0], task)
            if key in self._warned or task in self.app.tasks:
                continue
            self._warned.add(key)
            logger.warning(
                "singleton beat: entry %r sends task %r, which is not registered in this app: "
                "workers that do not register it either discard its messages (check the name, "
                "and that its module is imported: imports, include or autodiscover_tasks)",
                key[0], task,
            )  # fmt: skip

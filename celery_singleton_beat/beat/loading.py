"""Reading every entry's shared progress at start, a batch at a time.

At start (and when a standby becomes the leader) each entry's progress is read from the
slot store: its last handled slot, an interval's anchor, when it left the schedule. A
large schedule is read in batches (:mod:`celery_singleton_beat.core.batches`), each one
round trip with its own deadline, a few per tick within a time budget, so that the loop
keeps heartbeating and entries already read are dispatched while the rest load::

    tick 1: heartbeat ── batch 1..40 (0.5 s) ── dispatch what is due among them
    tick 2: heartbeat ── batch 41 fails (the store does not answer): backoff
    tick 3: heartbeat ── batch 41 again, 42..80 ...

A batch that fails is tried again alone on the next tick; batches done stay done.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import islice

from celery_singleton_beat.beat.wakeups import Wakeups
from celery_singleton_beat.core.batches import BATCH_COUNT, batches, name_size
from celery_singleton_beat.core.entries import Plan
from celery_singleton_beat.core.slots import OnceSlots, Slots
from celery_singleton_beat.stores.base import Fences, ScheduleChanges

logger = logging.getLogger(__name__)

#: Seconds of one tick spent loading at most (the loop heartbeats in between).
LOAD_BUDGET = 0.5
#: Seconds between two progress lines while loading.
PROGRESS_EVERY = 2.0

Owed = Sequence[tuple[str, int, Slots | None]]


class Loader:
    """Entries whose progress is still to be read (see the module docstring)."""

    def __init__(
        self,
        fences: Fences,
        changes: ScheduleChanges,
        wakeups: Wakeups,
        *,
        wake: Callable[[Plan, int | None, int], None],
        now_ms: Callable[[], int],
        monotonic: Callable[[], float],
        report: Callable[[Owed], None],
    ) -> None:
        self.fences = fences
        self.changes = changes
        self.wakeups = wakeups
        self.wake = wake
        """Wakes a plan for a slot just read, as of now (see ``Dispatcher.wake_seen``)."""
        self.now_ms = now_ms
        self.monotonic = monotonic
        self.report = report
        self._pending: deque[Plan] = deque()
        self.total = 0
        self.done = 0
        self._next_progress = 0.0

    @property
    def loading(self) -> bool:
        return bool(self._pending)

    def start(self, plans: Iterable[Plan]) -> None:
        """Read every plan's progress again, from the first."""
        self.wakeups.clear()
        self._pending = deque(plans)
        self.total, self.done = len(self._pending), 0
        self._next_progress = self.monotonic() + PROGRESS_EVERY

    def drop(self, names: Iterable[str]) -> None:
        """Plans that left the schedule while loading: not read (already read ones stay)."""
        gone = set(names)
        if gone:
            kept = [plan for plan in self._pending if plan.name not in gone]
            self.total -= len(self._pending) - len(kept)
            self._pending = deque(kept)

    def add(self, plans: Iterable[Plan]) -> None:
        """Plans that joined (or changed) while loading: read with the rest."""
        added = list(plans)
        self._pending.extend(added)
        self.total += len(added)

    def run(self, budget: float = LOAD_BUDGET) -> bool:
        """Read batches until every plan is read (True) or ``budget`` seconds are spent.

        A batch whose store call fails stays first in line and the error propagates.
        """
        until = self.monotonic() + budget
        while self._pending:
            batch = next(batches(list(islice(self._pending, BATCH_COUNT)), _plan_size))
            self.load(list(batch))
            for _ in range(len(batch)):
                self._pending.popleft()
            self.done += len(batch)
            if self._pending and self.monotonic() >= until:
                self._progress()
                return False
        return True

    def load(self, batch: Sequence[Plan]) -> None:
        """Read one batch's progress and wake each plan for its next slot."""
        once = [plan for plan in batch if isinstance(plan.slots, OnceSlots)]
        plans = [plan for plan in batch if not isinstance(plan.slots, OnceSlots)]
        now = self.now_ms()
        loaded = self.fences.init([(p.name, p.every_ms) for p in plans], now) if plans else []
        gone = self.changes.gone([p.name for p in plans]) if plans else []
        back = [
            p.name for p, (last, _a), left in zip(plans, loaded, gone, strict=True) if left > last
        ]
        if back:
            self.changes.start_at(back, now)
        owed: list[tuple[str, int, Slots | None]] = []
        for plan in once:
            # a single slot (run now, one-off, clocked) keeps its time even when first
            # seen after it, as at start-up: its fence sends it once (or says it was
            # decided already), the misfire policy decides how late
            plan.next_slot = plan.slots.at_ms  # type: ignore[attr-defined]
            self.wake(plan, plan.next_slot, now)
            owed.append((plan.name, now, plan.slots))
        for plan, (last, anchor), left in zip(plans, loaded, gone, strict=True):
            if anchor is not None:
                plan.anchor(anchor)
            # an entry back in the schedule since it left owes nothing from its absence
            since = max(last, now) if left > last else last
            plan.next_slot = plan.slots.next_after(since)
            self.wake(plan, plan.next_slot, now)
            owed.append((plan.name, since, plan.slots))
        self.report(owed)

    def _progress(self) -> None:
        monotonic = self.monotonic()
        if monotonic >= self._next_progress:
            self._next_progress = monotonic + PROGRESS_EVERY
            logger.info(
                "singleton beat: initialised %s of %s entries", f"{self.done:,}", f"{self.total:,}"
            )


def _plan_size(plan: Plan) -> int:
    return name_size(plan.name)

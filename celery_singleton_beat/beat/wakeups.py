"""When the scheduler looks at each entry next: a heap of (time in ms, entry name).

An entry is woken for its next slot, for a slot another replica held, or to retry one
that could not be published; a wake-up made stale by a newer one of the same entry is
dropped when it comes up.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from celery_singleton_beat.core.entries import Plan

#: Longest sleep between two ticks: the loop heartbeats and elects at least this often.
LONGEST_SLEEP = 1.0


class Wakeups:
    """The entries' wake-up times, soonest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []

    def clear(self) -> None:
        self._heap = []

    def wake(self, plan: Plan, when: int | None) -> None:
        """Look at ``plan`` at ``when`` (ms); never while it is paused."""
        if when is not None and not plan.policy.paused:
            plan.wake = when
            heapq.heappush(self._heap, (when, plan.name))

    def pop_due(self, plans: Mapping[str, Plan], now: int, limit: int | None = None) -> list[Plan]:
        """The plans woken at or before ``now``, each once, soonest first: at most
        ``limit`` of them, the rest left for the next pass (a burst of a hundred thousand
        due entries is looked at a pass's worth at a time, not all of them each pass)."""
        due: dict[str, Plan] = {}
        heap = self._heap
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            when, name = heapq.heappop(heap)
            plan = plans.get(name)
            if plan is not None and plan.wake == when and not plan.policy.paused:
                due[name] = plan
        return list(due.values())

    def soonest(self) -> int | None:
        """The soonest wake-up (ms; perhaps one a newer wake-up made stale), None if none."""
        return self._heap[0][0] if self._heap else None

    def sleep_for(self, now: int) -> float:
        """Seconds until the next wake-up, at most :data:`LONGEST_SLEEP`."""
        if not self._heap:
            return LONGEST_SLEEP
        return max(0.0, min(LONGEST_SLEEP, (self._heap[0][0] - now) / 1000))

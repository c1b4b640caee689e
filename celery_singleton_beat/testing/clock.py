"""A fake clock for tests: a wall clock and a monotonic clock that move only when told.

Give it to the app's runtime, and the scheduler runs on it::

    clock = FakeClock("2026-01-01T00:00:00")
    runtime = Runtime.of(app)
    runtime.clock, runtime.monotonic = clock, clock.monotonic
    clock.advance(1.5)  # both clocks move on

``now`` (the wall clock, seconds since the epoch) may also be set directly, as a clock that
jumps does; the monotonic clock then stays where it was.
"""

from __future__ import annotations

import datetime as dt


def epoch(moment: str) -> float:
    """An ISO 8601 time (UTC unless it names an offset) as seconds since the epoch."""
    parsed = dt.datetime.fromisoformat(moment)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


class FakeClock:
    """``clock()`` is the wall clock, ``clock.monotonic()`` the monotonic one (seconds)."""

    def __init__(
        self, start: str | float = "2026-01-01T00:00:00", monotonic: float = 1000.0
    ) -> None:
        self.now = epoch(start) if isinstance(start, str) else float(start)
        self.ticks = monotonic

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        """Move both clocks on by ``seconds``."""
        self.now += seconds
        self.ticks += seconds

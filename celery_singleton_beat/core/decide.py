"""What to do with a slot this replica has claimed: a pure function of the slot, the
entry's shared progress, the clock and the entry's misfire policy.

Kept apart from the scheduler's I/O so that every rule is tested in milliseconds:

- a slot handled within a second of its time (plus its jitter) fires;
- a slot whose earlier claim expired (its claimant died, or its publish failed) is
  *resumed*: it may already have been sent, so it is sent again, with the same task id,
  as long as it is within the misfire grace, whatever the policy;
- the newest due slot of an entry fires late under ``coalesce`` within the grace, unless
  a newer slot of the entry was handled already;
- any other slot passed with nobody claiming it: it is *missed*, and counted.
"""

from __future__ import annotations

import dataclasses
import enum

from celery_singleton_beat.core.schema import Misfire, Outcome

#: A slot handled within this many seconds of its time is on time.
ON_TIME = 1.0


class Verdict(enum.Enum):
    FIRE = Outcome.DISPATCHED.value
    SKIP = Outcome.SKIPPED_MISFIRE.value


@dataclasses.dataclass(frozen=True)
class SlotView:
    """One claimed slot as the scheduler sees it (times in ms)."""

    slot: int
    newest: bool
    """The newest due slot of its entry in this pass."""
    resumed: bool
    """Another claim on it expired, or this replica saw it held before."""
    offset: int = 0
    """Its jitter: it falls due this long after its time."""


def decide(view: SlotView, last: int, now: int, misfire: str, grace: float) -> Verdict:
    """The verdict for a claimed slot; ``last`` is the entry's newest handled slot."""
    late = (now - view.slot - view.offset) / 1000
    if late <= ON_TIME:
        return Verdict.FIRE
    if view.resumed or (view.newest and view.slot > last and misfire == Misfire.COALESCE):
        return Verdict.FIRE if late <= grace else Verdict.SKIP
    return Verdict.SKIP

"""The Redis slot store under its former name; see :mod:`celery_singleton_beat.stores`."""

from __future__ import annotations

from celery_singleton_beat.schema import ClaimStatus
from celery_singleton_beat.stores.base import Claim, EntryState, SlotOutcome
from celery_singleton_beat.stores.redis import RedisSlotStore as SlotStore

CLAIMED = ClaimStatus.CLAIMED
HELD = ClaimStatus.HELD
DONE = ClaimStatus.DONE

__all__ = ["CLAIMED", "DONE", "HELD", "Claim", "EntryState", "SlotOutcome", "SlotStore"]

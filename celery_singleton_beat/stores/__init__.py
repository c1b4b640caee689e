"""Slot stores: where beat replicas share the schedule's state (see :mod:`.base`).

A store is made by :mod:`.registry` for the app's runtime
(:class:`~celery_singleton_beat.runtime.Runtime`), from ``singleton_beat_store``.
"""

from __future__ import annotations

from celery_singleton_beat.stores.base import Claim, EntryState, SlotOutcome, SlotStore
from celery_singleton_beat.stores.memory import MemorySlotStore

__all__ = ["Claim", "EntryState", "MemorySlotStore", "SlotOutcome", "SlotStore"]

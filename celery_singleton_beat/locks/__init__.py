"""Lock backends behind one contract (see :mod:`.base`)."""

from celery_singleton_beat.locks.base import Lease, LockBackend, holder_name
from celery_singleton_beat.locks.memory import MemoryLock
from celery_singleton_beat.locks.redlock import Redlock
from celery_singleton_beat.locks.watchdog import Watchdog

__all__ = ["Lease", "LockBackend", "MemoryLock", "Redlock", "Watchdog", "holder_name"]

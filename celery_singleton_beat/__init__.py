"""celery-singleton-beat: highly available Celery Beat, each periodic task sent and run once.

The names below are imported on first use, so that importing a submodule alone (the
pytest plugin, loaded in every pytest run) does not import Celery, kombu and redis-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery_singleton_beat.beat.scheduler import Scheduler
    from celery_singleton_beat.errors import (
        ConfigurationError,
        LockError,
        QuorumUnavailable,
        SingletonBeatError,
        StoreUnavailable,
    )
    from celery_singleton_beat.tasks.singleton import SingletonTask, SlotAwareTask

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigurationError": "celery_singleton_beat.errors",
    "LockError": "celery_singleton_beat.errors",
    "QuorumUnavailable": "celery_singleton_beat.errors",
    "SingletonBeatError": "celery_singleton_beat.errors",
    "StoreUnavailable": "celery_singleton_beat.errors",
    "Scheduler": "celery_singleton_beat.beat.scheduler",
    "SingletonTask": "celery_singleton_beat.tasks.singleton",
    "SlotAwareTask": "celery_singleton_beat.tasks.singleton",
}

__all__ = [
    "ConfigurationError",
    "LockError",
    "QuorumUnavailable",
    "Scheduler",
    "SingletonBeatError",
    "SingletonTask",
    "SlotAwareTask",
    "StoreUnavailable",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'celery_singleton_beat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

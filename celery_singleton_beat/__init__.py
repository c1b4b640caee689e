"""celery-singleton-beat: highly available Celery Beat, each periodic task sent and run once."""

from celery_singleton_beat.errors import (
    ConfigurationError,
    LockError,
    QuorumUnavailable,
    SingletonBeatError,
    StoreUnavailable,
)
from celery_singleton_beat.scheduler import Scheduler
from celery_singleton_beat.task import SingletonTask, SlotAwareTask

__version__ = "0.1.0"

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

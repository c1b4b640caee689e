"""celery-singleton-beat: highly available Celery Beat, each periodic task sent and run once."""

from celery_singleton_beat.errors import (
    ConfigurationError,
    LockError,
    QuorumUnavailable,
    SingletonBeatError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "LockError",
    "QuorumUnavailable",
    "SingletonBeatError",
    "__version__",
]

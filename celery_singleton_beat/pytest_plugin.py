"""The pytest plugin's former path, kept working for
``pytest_plugins = ["celery_singleton_beat.pytest_plugin"]``.

The plugin is :mod:`celery_singleton_beat.testing.pytest_plugin`, which the ``pytest11``
entry point names."""

from celery_singleton_beat.testing.pytest_plugin import (
    singleton_beat_memory_lock,
    singleton_beat_redis_masters,
    singleton_beat_redis_masters_count,
    singleton_beat_redis_urls,
)

__all__ = [
    "singleton_beat_memory_lock",
    "singleton_beat_redis_masters",
    "singleton_beat_redis_masters_count",
    "singleton_beat_redis_urls",
]

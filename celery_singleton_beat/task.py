"""``SingletonTask`` and ``SlotAwareTask`` moved to :mod:`celery_singleton_beat.tasks.singleton`;
this path keeps working."""

from celery_singleton_beat.tasks.singleton import *  # noqa: F403  (the names the docs gave)

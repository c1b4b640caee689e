"""Slot times moved to :mod:`celery_singleton_beat.core.slots`;
this path keeps working."""

from celery_singleton_beat.core.slots import *  # noqa: F403  (the names the docs gave)

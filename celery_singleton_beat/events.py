"""The library's events moved to :mod:`celery_singleton_beat.observe.events`;
this path keeps working."""

from celery_singleton_beat.observe.events import *  # noqa: F403  (the names the docs gave)

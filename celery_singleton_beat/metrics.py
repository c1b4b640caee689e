"""The Prometheus metrics moved to :mod:`celery_singleton_beat.observe.metrics`;
this path keeps working."""

from celery_singleton_beat.observe.metrics import *  # noqa: F403  (the names the docs gave)

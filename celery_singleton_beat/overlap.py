"""The overlap policy moved to :mod:`celery_singleton_beat.core.overlap` (the rule) and
:mod:`celery_singleton_beat.tasks.overlap` (the worker's ``install``); this path keeps
working."""

from celery_singleton_beat.core.overlap import (
    POLICIES,
    RETENTION,
    TRACK_HEADER,
    blocked,
    parse_slot,
)
from celery_singleton_beat.tasks.overlap import install

__all__ = ["POLICIES", "RETENTION", "TRACK_HEADER", "blocked", "install", "parse_slot"]

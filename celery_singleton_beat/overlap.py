"""The overlap policy's former path, kept working: the rule moved to
:mod:`celery_singleton_beat.core.overlap`, the worker's ``install`` to ``tasks/overlap.py``."""

from celery_singleton_beat.core.overlap import (
    POLICIES,
    RETENTION,
    TRACK_HEADER,
    blocked,
    parse_slot,
)
from celery_singleton_beat.tasks.overlap import install

__all__ = ["POLICIES", "RETENTION", "TRACK_HEADER", "blocked", "install", "parse_slot"]

"""The hourly retention task beat adds when ``SINGLETON_BEAT_RETENTION`` is set."""

from __future__ import annotations

import logging

from celery import shared_task

from . import conf
from .apps import PRUNE_ENTRY
from .prune import prune

logger = logging.getLogger(__name__)


@shared_task(name=PRUNE_ENTRY, ignore_result=True)
def prune_records() -> dict[str, int]:
    settings = conf.load()
    if settings.retention is None:
        logger.info("SINGLETON_BEAT_RETENTION is not set; nothing pruned")
        return {}
    deleted = prune(settings.retention, using=settings.database)
    logger.info("singleton beat: pruned records older than %s: %s", settings.retention, deleted)
    return deleted

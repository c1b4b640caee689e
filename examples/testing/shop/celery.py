"""The application's Celery app, configured for production: three Redis lock masters."""

import os

from celery import Celery

app = Celery("shop", broker=os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    singleton_beat_redis_urls=os.environ.get(
        "SHOP_LOCK_URLS", "redis://redis-1:6379/0,redis://redis-2:6379/0,redis://redis-3:6379/0"
    ),
    beat_scheduler="celery_singleton_beat.Scheduler",
)
app.autodiscover_tasks(["shop"])

"""The app of bench/sqlalchemy_celery_beat_source.py, in its beat replicas: sqlalchemy-celery-beat's
tables on the script's PostgreSQL database (``BENCH_DBURI``), RabbitMQ as the broker
(``BENCH_BROKER``), every message to the script's queue (``BENCH_QUEUE``), no Redis."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench_scb", broker=os.environ["BENCH_BROKER"])
app.conf.update(
    timezone="UTC",
    task_default_queue=os.environ["BENCH_QUEUE"],
    broker_connection_retry_on_startup=True,
    beat_dburi=os.environ["BENCH_DBURI"],
    result_expires=None,  # no celery.backend_cleanup row
    singleton_beat_store="sqlalchemy",
    singleton_beat_schedule_source="sqlalchemy_celery_beat",
)

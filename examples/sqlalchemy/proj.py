"""A plain Celery project (no Django, no Redis): the schedule is in sqlalchemy-celery-beat's
tables, beat runs on every replica, and each slot is sent once through the database."""

import logging
import os

from celery import Celery

logger = logging.getLogger(__name__)

app = Celery(
    "proj",
    broker=os.environ.get("BROKER_URL", "amqp://guest:guest@localhost:5672//"),
    # a slot sent again after a replica died before marking it done runs once
    task_cls="celery_singleton_beat:SlotAwareTask",
)
app.conf.update(
    # the database: sqlalchemy-celery-beat's tables and the replicas' shared state
    beat_dburi=os.environ.get("DATABASE_URL", "sqlite:///beat.sqlite3"),
    beat_scheduler="celery_singleton_beat.Scheduler",
    singleton_beat_store="sqlalchemy",
    singleton_beat_schedule_source="sqlalchemy_celery_beat",
    # where SlotAwareTask keeps its marks: the same database
    singleton_beat_task_backend="celery_singleton_beat.locks.sqlalchemy.from_app",
    result_expires=None,
)


@app.task
def report(name: str) -> None:
    logger.warning("report %s ran", name)

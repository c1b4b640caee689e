"""The app of bench/django_celery_beat_source.py, in the script and in its beat replicas:
Django on the script's PostgreSQL database (``BENCH_DB_NAME``) with django-celery-beat
installed, the broker and the lock master the script started (``BENCH_BROKER``,
``BENCH_MASTERS``), every message to the script's queue (``BENCH_QUEUE``).

Django's settings are its defaults where the bench does not need another value; in
particular ``CONN_MAX_AGE = 0``, as in a project that does not set it.
"""

from __future__ import annotations

import os

import django
from celery import Celery
from django.conf import settings

settings.configure(
    USE_TZ=True, TIME_ZONE="UTC", SECRET_KEY="bench",
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_celery_beat",
                    "django_celery_singleton_beat"],  # as the migration guide asks
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql",
                           "NAME": os.environ["BENCH_DB_NAME"], "USER": "postgres",
                           "HOST": "127.0.0.1", "PORT": "5432"}},
)  # fmt: skip
django.setup()

app = Celery("bench_dcb", broker=os.environ["BENCH_BROKER"])
app.conf.update(
    timezone="UTC",
    task_default_queue=os.environ["BENCH_QUEUE"],
    broker_connection_retry_on_startup=True,
    singleton_beat_redis_urls=os.environ["BENCH_MASTERS"],
    singleton_beat_schedule_source="django_celery_beat",
)

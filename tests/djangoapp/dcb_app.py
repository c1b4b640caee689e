"""``tests.beat.app`` with Django set up on the test's database, so that its replicas can
read django-celery-beat's tables (``singleton_beat_schedule_source``)."""

import os

import django

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.djangoapp.dcb_settings"
django.setup()

from tests.beat.app import app, record  # noqa: E402

__all__ = ["app", "record"]

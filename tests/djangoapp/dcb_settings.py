"""Settings of the beat replicas that read django-celery-beat's tables: the test settings
with the test's own PostgreSQL database (``DCB_DB_NAME``) as the default one."""

import os

from tests.djangoapp.settings import *  # noqa: F403
from tests.djangoapp.settings import DATABASES

DATABASES = {"default": {**DATABASES["postgres"], "NAME": os.environ["DCB_DB_NAME"]}}

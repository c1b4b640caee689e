"""Django settings for the Django app's tests: SQLite by default, PostgreSQL and MariaDB beside.

pytest-django creates (and drops) a database of its own on each server, named with this
process's id so that two runs on one machine never share one.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

import pymysql

pymysql.install_as_MySQLdb()

RUN = f"csb_test_{os.getpid()}"
TMP = os.environ.get("CSB_TEST_TMP") or tempfile.mkdtemp(prefix="csb-django-")

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.djangoapp.urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_singleton_beat",
    # the result-backend test reads the rows a worker stores through it
    "django_celery_results",
]
# django-celery-beat's schedule source is tested where django-celery-beat installs (it
# does not support every Django the app does: the matrix's newest cell runs without it)
if importlib.util.find_spec("django_celery_beat") is not None:
    INSTALLED_APPS.append("django_celery_beat")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(TMP, "db.sqlite3"),
        "OPTIONS": {"timeout": 20},
        "TEST": {"NAME": os.path.join(TMP, f"{RUN}.sqlite3")},
    },
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "USER": os.environ.get("CSB_PG_USER", "postgres"),
        "HOST": os.environ.get("CSB_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("CSB_PG_PORT", "5432"),
        "TEST": {"NAME": RUN, "DEPENDENCIES": []},
    },
    "mariadb": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "test",
        "USER": os.environ.get("CSB_MYSQL_USER", "root"),
        "HOST": os.environ.get("CSB_MYSQL_HOST", "127.0.0.1"),
        "PORT": os.environ.get("CSB_MYSQL_PORT", "3306"),
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": RUN, "CHARSET": "utf8mb4", "DEPENDENCIES": []},
    },
}
CELERY_BROKER_URL = "memory://"
SINGLETON_BEAT_RECORD = False  # tests that record make their own Recorder
EXPECTED_VENDOR = "sqlite"

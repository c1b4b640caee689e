"""Settings of the demo project. Everything that differs between machines comes from
the environment (``DEMO_*``), with defaults for a laptop running Redis on 6379."""

import importlib.util
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
env = os.environ.get

SECRET_KEY = env("DEMO_SECRET_KEY", "demo-only-not-secret")
DEBUG = env("DEMO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_singleton_beat",
    "billing",
    "demo_site.apps.DemoSiteConfig",
]
# django-celery-beat's tables hold part of the schedule, editable in its admin (`make
# demo-django` installs it). It supports Django < 6.1 only: on a newer Django the demo
# runs without it, on the code's entries alone.
DJANGO_CELERY_BEAT = importlib.util.find_spec("django_celery_beat") is not None
if DJANGO_CELERY_BEAT:
    INSTALLED_APPS.append("django_celery_beat")
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "demo_site.urls"
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

if env("DEMO_DB_ENGINE", "sqlite") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env("DEMO_DB_NAME", "demo"),
            "USER": env("DEMO_DB_USER", "postgres"),
            "HOST": env("DEMO_DB_HOST", "127.0.0.1"),
            "PORT": env("DEMO_DB_PORT", "5432"),
            # fail fast while the database is away; the recorder retries
            "OPTIONS": {"connect_timeout": 2},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env("DEMO_DB_NAME", str(BASE_DIR / "demo.sqlite3")),
            # beat replicas, the worker and the web server write to one file (in WAL mode:
            # see demo_site/apps.py)
            "OPTIONS": {"timeout": 20},
        }
    }

# Celery: every setting below is CELERY_<name> because of namespace="CELERY".
CELERY_BROKER_URL = env("DEMO_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_BEAT_SCHEDULER = "celery_singleton_beat.Scheduler"
CELERY_SINGLETON_BEAT_REDIS_URLS = env("DEMO_REDIS_URLS", "redis://127.0.0.1:6379/0")
CELERY_SINGLETON_BEAT_KEY_PREFIX = env("DEMO_KEY_PREFIX", "demo-singleton-beat:")
# results in the database with django-celery-results: DEMO_RESULT_BACKEND=django-db
if env("DEMO_RESULT_BACKEND", ""):
    INSTALLED_APPS.append("django_celery_results")
    CELERY_RESULT_BACKEND = env("DEMO_RESULT_BACKEND", "")
    # each result with its task's name, arguments and, for a django-celery-beat row's run,
    # the row's name (`periodic_task_name`), as django-celery-results' admin lists them
    CELERY_RESULT_EXTENDED = True
CELERY_SINGLETON_BEAT_CLAIM_TTL = 2.0
EVERY = float(env("DEMO_EVERY", "5"))
# Two schedule sources, merged (a name in both stops beat at start-up):
# - the code's: the billing jobs the code depends on, reviewed and deployed with it;
# - django-celery-beat's tables: the jobs operators change in the admin without a deploy.
#   `python manage.py demo_schedule` (run_demo.py runs it) creates the demo's rows,
#   `send-reminders` every 3 x DEMO_EVERY s and `nightly-report` at 02:30 Europe/Berlin.
CELERY_BEAT_SCHEDULE = {
    "charge-cards": {"task": "billing.charge_cards", "schedule": EVERY},
    "sync-ledger": {"task": "billing.sync_ledger", "schedule": EVERY * 2},
}
CELERY_SINGLETON_BEAT_SCHEDULE_SOURCE = (
    ["beat_schedule", "django_celery_beat"] if DJANGO_CELERY_BEAT else "beat_schedule"
)

# The Django app: record every run and slot decision, keep two weeks of them.
SINGLETON_BEAT_RETENTION = "14d"

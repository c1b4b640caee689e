# The Celery app is made when Django starts, so that shared tasks and the admin use it.
from .celery import app as celery_app

__all__ = ["celery_app"]

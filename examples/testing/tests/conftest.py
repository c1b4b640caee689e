import pytest

# pytest-celery provides Celery's test fixtures (celery_app, celery_config, ...), but
# from version 1.0 on its celery_worker is a worker in a Docker container. Celery's own
# in-process worker thread is the one that shares the test's in-memory lock:
from celery.contrib.pytest import celery_worker  # noqa: F401
from shop import tasks


@pytest.fixture(autouse=True)
def _forget_syncs():
    tasks.SYNCED.clear()
    tasks.DIGESTS.clear()

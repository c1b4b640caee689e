"""A Celery app whose lock masters carry a password, given in the form the test names.

``TEST_URL`` is the master URL; ``TEST_URL_FORM`` says where it goes: ``list``, ``str``
or ``set`` in ``singleton_beat_redis_urls``, or ``broker`` (``broker_url``, the masters
unset). ``TEST_BROKER_URL`` is the broker otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

url = os.environ.get("TEST_URL", "redis://127.0.0.1:1/0")
form = os.environ.get("TEST_URL_FORM", "list")
urls: Any = {"list": [url], "str": url, "set": {url}}.get(form)

app = Celery("secrets", broker=url if form == "broker" else os.environ.get("TEST_BROKER_URL"))
app.conf.update(
    beat_scheduler="celery_singleton_beat.Scheduler",
    beat_schedule={},
    broker_connection_retry_on_startup=True,
)
if urls is not None:
    app.conf.singleton_beat_redis_urls = urls

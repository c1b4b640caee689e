"""A task that appends each of its executions to a file, one JSON line each: the browser
tests count the runs from the task's own log, apart from the records the Django app keeps.

A worker of the demo project loads it with ``celery worker -I tests.djangoapp.journal``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from celery import shared_task

from celery_singleton_beat.core.schema import Header


@shared_task(bind=True, name="journal.append")
def append(self: Any, path: str) -> None:
    """Append this execution (task id, beat entry and slot) to the file at ``path``."""
    headers = self.request.headers or {}
    line = {
        "task_id": self.request.id,
        "entry": headers.get(Header.ENTRY.value),
        "slot": headers.get(Header.SLOT.value),
        "at": time.time(),
    }
    with open(path, "a", encoding="utf-8") as journal:
        journal.write(json.dumps(line) + "\n")

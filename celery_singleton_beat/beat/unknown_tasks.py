"""Entries whose task this process does not register: warned of once per entry and task,
in one line per task for entries that appear together (100,000 entries: one line)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from celery_singleton_beat.core.entries import Plan
from celery_singleton_beat.sources.schedule_document import RUN_NOW

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)


class UnknownTasks:
    """Warns of entries whose task this process does not register, once per entry and
    task: at start, and when an entry appears or changes its task.

    A warning, not a refusal: a task may be registered on the workers alone (beat sends
    it by name). Where no worker registers it either, each of its messages is discarded.
    A run asked for now counts as its entry.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._warned: set[tuple[str, str]] = set()

    def warn(self, plans: Iterable[Plan]) -> None:
        new: dict[str, list[str]] = {}
        for plan in plans:
            task = plan.entry.task
            key = (plan.name.partition(RUN_NOW)[0], task)
            if key in self._warned or task in self.app.tasks:
                continue
            self._warned.add(key)
            new.setdefault(task, []).append(key[0])
        for task, names in new.items():
            if len(names) == 1:
                logger.warning(
                    "singleton beat: entry %r sends task %r, which is not registered in this "
                    "app: %s", names[0], task, CONSEQUENCE,
                )  # fmt: skip
                continue
            shown = ", ".join(repr(name) for name in names[:NAMED])
            more = f" and {len(names) - NAMED:,} more" if len(names) > NAMED else ""
            logger.warning(
                "singleton beat: %s entries (%s%s) send task %r, which is not registered in "
                "this app: %s", f"{len(names):,}", shown, more, task, CONSEQUENCE,
            )  # fmt: skip


#: What a message of such a task meets, and where to look.
CONSEQUENCE = (
    "workers that do not register it either discard its messages (check the name, and that "
    "its module is imported: imports, include or autodiscover_tasks)"
)
#: How many entries of one task a warning names.
NAMED = 5

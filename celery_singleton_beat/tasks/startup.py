"""A worker that runs singleton or slot-aware tasks checks the settings when it starts.

Beat reads and checks the library's settings when it starts (its scheduler is made
then); a worker reads them only when its first :class:`~celery_singleton_beat.SingletonTask`
runs, which may be hours later, and a misspelt or bad setting would go unseen until then.
Binding such a task to an app adds :class:`SettingsCheck` to the app's worker boot steps,
so that ``celery worker`` refuses to start over them, as beat does.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps

from celery_singleton_beat.runtime import Runtime


class SettingsCheck(bootsteps.Step):  # type: ignore[misc]
    """A worker boot step: the app's task settings (``singleton_beat_*``), read and checked."""

    name = "celery_singleton_beat settings"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        Runtime.of(worker.app).task_config()


def check_at_worker_start(app: Celery) -> None:
    """Have ``app``'s workers check the settings when they start."""
    app.steps["worker"].add(SettingsCheck)

"""A Celery app with singleton, slot-aware and plain tasks, run eagerly or in Celery's in-process
test worker on an in-memory lock backend (no Redis, no broker process)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from celery_singleton_beat import SingletonTask, SlotAwareTask

MEMORY_LOCK = "celery_singleton_beat.locks.memory.MemoryLock"


@dataclass
class Tasks:
    """The app, its tasks and what their bodies saw."""

    app: Celery
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    attempts: list[int] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    """The task ids a plain task (no base of the library) ran with."""
    tasks: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["tasks"][name]
        except KeyError:
            raise AttributeError(name) from None


def make_app(name: str, **settings: Any) -> Tasks:
    """An app whose singleton tasks lock in memory; ``settings`` go to ``app.conf``."""
    # no Django fixup: the suite runs under pytest-django, whose database guard the fixup's
    # start-up checks trip on Django >= 6.1; these apps are not Django projects
    app = Celery(
        name, broker="memory://", backend="cache+memory://", set_as_current=False, fixups=[]
    )
    app.conf.update(
        singleton_beat_task_backend=MEMORY_LOCK,
        broker_transport_options={"polling_interval": 0.05},
        broker_connection_retry_on_startup=True,
        **settings,
    )
    made = Tasks(app)

    @app.task(bind=True, shared=False, base=SingletonTask, name=f"{name}.whoami")
    def whoami(self: Any) -> dict[str, Any]:
        lease = self.singleton
        return {
            "id": self.request.id,
            "key": lease.key if lease else None,
            "fence": lease.fence if lease else None,
        }

    @app.task(
        bind=True, shared=False, base=SingletonTask, name=f"{name}.held", singleton_key="held"
    )
    def held(self: Any) -> str:
        made.entered.set()
        made.gate.wait(10)
        return f"ran {self.request.id}"

    @app.task(bind=True, shared=False, base=SingletonTask, name=f"{name}.flaky", max_retries=3)
    def flaky(self: Any, fail_times: int) -> dict[str, Any]:
        made.attempts.append(self.request.retries)
        if self.request.retries < fail_times:
            raise self.retry(countdown=0)
        return {"retries": self.request.retries, "id": self.request.id}

    @app.task(bind=True, shared=False, base=SlotAwareTask, name=f"{name}.slotted")
    def slotted(self: Any) -> str:
        return f"ran {self.request.id}"

    @app.task(
        bind=True, shared=False, base=SingletonTask, name=f"{name}.queued_once",
        singleton_enqueue=True, singleton_key="queued",
    )  # fmt: skip
    def queued_once(self: Any) -> str:
        made.attempts.append(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(countdown=2)
        return str(self.request.id)

    @app.task(bind=True, shared=False, name=f"{name}.plain")
    def plain(self: Any) -> str:
        made.ran.append(str(self.request.id))
        return f"ran {self.request.id}"

    made.tasks.update(
        whoami=whoami, held=held, flaky=flaky, slotted=slotted, queued_once=queued_once,
        plain=plain,
    )  # fmt: skip
    return made

"""Events as a test sees them: the library's, kept by type as they are emitted, and
Celery's, received from a broker as Flower receives them."""

from __future__ import annotations

import threading
import time
from typing import Any, TypeVar

from celery import Celery

from celery_singleton_beat.observe import events

E = TypeVar("E", bound=events.Event)


class EventLog:
    """The library's events emitted in this process while a test runs, kept by type."""

    def __init__(self) -> None:
        self._kept: list[tuple[type[events.Event], list[Any]]] = []

    def __call__(self, event: events.Event) -> None:
        for kind, found in self._kept:
            if isinstance(event, kind):
                found.append(event)

    def of(self, kind: type[E]) -> list[E]:
        """The events of ``kind`` from now on, in a list that grows as they come."""
        found: list[E] = []
        self._kept.append((kind, found))
        return found


class CeleryEvents:
    """Every Celery event on the broker, received from a thread, as Flower receives them."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("monitor", broker=broker_url)
        self.seen: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self.seen.append})
            self.ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> CeleryEvents:
        self._thread.start()
        assert self.ready.wait(10)
        time.sleep(0.5)  # the receiver's queue is bound once capture() consumes
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(5)

    def of(self, task_id: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e.get("uuid") == task_id]

"""The library's events as a test sees them: kept by type as they are emitted."""

from __future__ import annotations

from typing import Any, TypeVar

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

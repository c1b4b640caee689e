"""Fixtures shared by the scheduler's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_singleton_beat.observe import events


@pytest.fixture
def fired() -> Iterator[list[events.SlotFired]]:
    """Every ``SlotFired`` event emitted in this process while the test runs."""
    seen: list[events.SlotFired] = []
    unsubscribe = events.subscribe(
        lambda e: seen.append(e) if isinstance(e, events.SlotFired) else None
    )
    yield seen
    unsubscribe()

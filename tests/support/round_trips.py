"""Round trips to the masters, counted where they are made."""

from __future__ import annotations

from typing import Any

import pytest

from celery_singleton_beat.connections.masters import Masters


class Trips:
    """Counts round trips (``Masters.exchange`` calls, each to every master at once, or
    to every shard primary of a Redis Cluster a batch reaches)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = Masters.exchange

        def counted(masters: Masters, nodes: Any, batches: Any) -> Any:
            self.count += 1
            return original(masters, nodes, batches)

        monkeypatch.setattr(Masters, "exchange", counted)

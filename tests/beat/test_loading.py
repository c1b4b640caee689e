"""Each entry's progress read a batch at a time: a batch that fails is tried again alone,
and the batches read before it stay read. The store is the in-memory one, made to fail
one call (an injected error a real server cannot be made to give on cue)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from celery import Celery

from celery_singleton_beat.beat.loading import Loader
from celery_singleton_beat.beat.wakeups import Wakeups
from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.stores.base import EntryState
from celery_singleton_beat.stores.memory import MemorySlotStore

NOW = 1_800_000_000_000


class FailsOnce(MemorySlotStore):
    """The memory store, whose ``init`` fails on its second call only."""

    def __init__(self) -> None:
        super().__init__(lambda: NOW)
        self.calls: list[list[str]] = []

    def init(self, entries: Sequence[tuple[str, int | None]], now: int) -> list[EntryState]:
        self.calls.append([name for name, _every in entries])
        if len(self.calls) == 2:
            raise StoreUnavailable(self.name, "init", "injected")
        return super().init(entries, now)


def plans(count: int) -> list[Plan]:
    app = Celery("loading", set_as_current=False)
    entries = [Entry(name=f"e{i:04d}", task="t", schedule=60.0, app=app) for i in range(count)]
    return [Plan.build(entry, dt.timezone.utc, 300.0) for entry in entries]


def test_a_failed_batch_is_read_again_alone_and_the_ones_before_it_stay_read() -> None:
    store, wakeups = FailsOnce(), Wakeups()
    loader = Loader(
        store, store, wakeups, wake=lambda plan, when, _now: wakeups.wake(plan, when),
        now_ms=lambda: NOW, monotonic=lambda: 0.0, report=lambda owed: None,
    )  # fmt: skip
    made = plans(1200)
    loader.start(made)
    with pytest.raises(StoreUnavailable):
        loader.run()
    assert (loader.done, loader.total, loader.loading) == (500, 1200, True)
    assert loader.run() is True
    sizes = [len(call) for call in store.calls]
    assert sizes == [500, 500, 500, 200]
    assert store.calls[2] == store.calls[1], "the failed batch again, alone"
    assert (loader.done, loader.loading) == (1200, False)
    due = wakeups.pop_due({p.name: p for p in made}, NOW + 60_000)
    assert len(due) == 1200, "every entry is looked at for its next slot"

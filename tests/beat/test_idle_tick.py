"""What a tick costs when nothing is due: at most one round trip, so that a slot falling
due is never kept waiting behind two. The scheduler runs on a fake clock (wall and
monotonic), tick by tick, each tick's sleep taken by moving the clock on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import FakeClock, RedisServer


class Counted:
    """The idle scheduler, with its heartbeats and source polls counted per tick."""

    def __init__(self, sched: Scheduler, clock: FakeClock, monkeypatch: pytest.MonkeyPatch):
        self.sched, self.clock, self.calls = sched, clock, list[str]()
        source = sched._watcher.source
        monkeypatch.setattr(sched.store, "heartbeat", self._counted("heartbeat", sched.store))
        monkeypatch.setattr(source, "version", self._counted("poll", source))

    def _counted(self, label: str, owner: Any) -> Callable[..., Any]:
        call = getattr(owner, "heartbeat" if label == "heartbeat" else "version")

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(label)
            return call(*args, **kwargs)

        return counted

    def tick(self) -> tuple[list[str], float]:
        """One tick: what it did, and how long it asked to sleep."""
        self.calls.clear()
        delay = self.sched.tick()
        return list(self.calls), delay


@pytest.fixture
def idle(
    redis_cluster: Callable[[int], list[RedisServer]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Counted]:
    master = redis_cluster(1)[0]
    app = Celery("idle-tick", broker="memory://", set_as_current=False)
    app.conf.update(
        singleton_beat_redis_urls=[master.url],
        beat_schedule={"hourly": {"task": "t", "schedule": 3600.0}},
    )
    clock = FakeClock("2026-01-01T00:00:10")
    runtime = Runtime.of(app)
    runtime.clock, runtime.monotonic = clock, clock.monotonic
    sched = Scheduler(app=app)
    counted = Counted(sched, clock, monkeypatch)
    try:
        assert counted.tick() == (["heartbeat"], 1.0)  # the first tick registers the entry
        clock.advance(1.0)
        yield counted
    finally:
        sched.close()


def test_an_idle_tick_makes_the_heartbeat_or_the_source_poll_never_both(idle: Counted) -> None:
    ticks = []
    for _ in range(8):
        done, delay = idle.tick()
        ticks.append((done, delay))
        idle.clock.advance(delay)
    # a heartbeat every second, a poll halfway between two: one round trip per tick
    assert ticks == [(["heartbeat"], 0.5), (["poll"], 0.5)] * 4


def test_a_tick_woken_late_past_a_heartbeat_makes_the_heartbeat_and_polls_half_a_second_later(
    idle: Counted,
) -> None:
    assert idle.tick() == (["heartbeat"], 0.5)
    idle.clock.advance(1.25)  # a loaded machine: woken 0.75 s late, past a poll and a beat
    assert idle.tick() == (["heartbeat"], 0.5)  # the poll owed waits: one round trip a tick
    idle.clock.advance(0.5)
    assert idle.tick() == (["poll"], 0.5)  # then both go on from the late tick, a second
    idle.clock.advance(0.5)  # apart and half a second from each other
    assert idle.tick() == (["heartbeat"], 0.5)

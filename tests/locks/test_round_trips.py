"""What a lock operation costs in round trips to the masters, counted on real servers."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.app.trace import build_tracer

from celery_singleton_beat import SingletonTask, SlotAwareTask
from celery_singleton_beat.connections import masters as wire
from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.errors import QuorumUnavailable
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.tasks.singleton import ENTRY_HEADER, SLOT_HEADER
from celery_singleton_beat.testing import RedisServer
from tests.support.round_trips import Trips


@pytest.fixture
def slot_task(three_masters: list[RedisServer]) -> Iterator[tuple[Any, list[str]]]:
    """A singleton task traced as a worker runs it, and the ids of its runs."""
    urls = [s.url for s in three_masters]
    app = Celery("round-trips", broker="memory://", set_as_current=False)
    app.conf.update(singleton_beat_redis_urls=urls, task_ignore_result=True)
    ran: list[str] = []

    @app.task(name="rt.slotted", base=SingletonTask, bind=True, singleton_key="k")
    def slotted(self: Any) -> None:
        ran.append(self.request.id)

    trace = build_tracer(slotted.name, slotted, app=app, hostname="w@host")

    def run(task_id: str, slot: str) -> None:
        headers = {"id": task_id, "task": slotted.name, ENTRY_HEADER: "e", SLOT_HEADER: slot}
        outcome = trace(task_id, (), {}, headers)
        # no exception; a dropped copy ends as Celery's IGNORED (it stores no result)
        assert outcome[1] is None or outcome[1].state == "IGNORED", outcome[1]

    yield run, ran


def test_a_slot_message_takes_its_slot_mark_and_its_lock_in_one_round_trip(
    slot_task: tuple[Any, list[str]], trips: Trips
) -> None:
    run, ran = slot_task
    run("first", "2026-01-01T00:00:00")  # connections made, scripts loaded
    trips.count = 0
    run("second", "2026-01-01T00:01:00")
    assert (ran, trips.count) == (["first", "second"], 1)


def test_a_copy_of_a_slot_that_ran_is_dropped_without_touching_the_lock(
    slot_task: tuple[Any, list[str]], three_masters: list[RedisServer]
) -> None:
    run, ran = slot_task
    run("first", "2026-01-01T00:00:00")
    lock = Redlock.from_urls([s.url for s in three_masters])
    held = lock.acquire("task:k", ttl=30)
    assert held is not None
    run("copy", "2026-01-01T00:00:00")
    assert ran == ["first"]
    assert lock.holder("task:k") == held.token
    assert lock.release(held) is True


def test_a_copy_of_a_slot_that_ran_is_dropped_after_one_round_trip_without_waiting(
    slot_task: tuple[Any, list[str]], trips: Trips
) -> None:
    run, ran = slot_task
    run("first", "2026-01-01T00:00:00")
    trips.count = 0
    run("copy", "2026-01-01T00:00:00")
    # the claim of the held mark, then the holder read for the log line and the event;
    # no retries for a second: a "ran" mark is never let go
    assert (ran, trips.count) == (["first"], 2)


def test_a_plain_slot_aware_copy_is_dropped_without_retrying_its_held_mark(
    three_masters: list[RedisServer], trips: Trips
) -> None:
    app = Celery("round-trips-aware", broker="memory://", set_as_current=False)
    app.conf.update(singleton_beat_redis_urls=[s.url for s in three_masters])
    ran: list[str] = []

    @app.task(name="rt.aware", base=SlotAwareTask, bind=True)
    def aware(self: Any) -> None:
        ran.append(self.request.id)

    trace = build_tracer(aware.name, aware, app=app, hostname="w@host")
    headers = {"task": aware.name, ENTRY_HEADER: "e", SLOT_HEADER: "2026-01-01T00:00:00"}
    trace("first", (), {}, {**headers, "id": "first"})
    trips.count = 0
    trace("copy", (), {}, {**headers, "id": "copy"})
    assert (ran, trips.count) == (["first"], 2)


def test_scripts_flushed_on_the_master_are_loaded_again_on_the_next_acquire(
    redis_cluster: Any,
) -> None:
    (server,) = redis_cluster(1)
    lock = Redlock.from_urls([server.url])
    lease = lock.acquire("k", ttl=5)
    assert lease is not None
    assert lock.release(lease) is True
    server.client().script_flush()
    with pytest.raises(QuorumUnavailable, match="No matching script"):
        lock.acquire("k", ttl=5)
    again = lock.acquire("k", ttl=5)
    assert again is not None
    assert lock.release(again) is True


def test_a_reply_of_forty_thousand_values_is_read_whole_within_the_node_timeout(
    three_masters: list[RedisServer],
) -> None:
    masters = Masters.from_urls([s.url for s in three_masters], 0.05)
    values = [f"value-{i:05d}-{'v' * 50}" for i in range(40_000)]
    masters.broadcast([("RPUSH", "list", *values)])
    replies = masters.broadcast([("LRANGE", "list", 0, -1), ("PING",)])
    assert replies == [[[v.encode() for v in values], b"PONG"]] * 3
    masters.close()


_POLL = select.poll


class CountedPoll:
    """A ``select.poll`` object that counts the calls that may wait (a timeout above 0)."""

    waits = 0

    def __init__(self) -> None:
        self._poll = _POLL()
        self.register, self.unregister = self._poll.register, self._poll.unregister

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        if timeout is None or timeout > 0:
            CountedPoll.waits += 1
        return self._poll.poll(timeout)


def test_an_acquire_after_a_posted_release_waits_for_its_own_reply_alone(
    redis_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply of a release posted earlier, arrived meanwhile, is read when the
    connection is checked out: the acquire then waits once, for its own reply."""
    (server,) = redis_cluster(1)
    lock = Redlock.from_urls([server.url])
    lease = lock.acquire("warm", ttl=5)
    assert lease is not None
    lock.release_nowait(lease)
    monkeypatch.setattr(wire.select, "poll", CountedPoll)
    lock.masters._watches.clear()
    for run in range(5):
        time.sleep(0.05)  # the posted release's replies arrive
        CountedPoll.waits = 0
        lease = lock.acquire(f"run-{run}", ttl=5)
        assert lease is not None
        assert CountedPoll.waits == 1
        lock.release_nowait(lease)
    time.sleep(0.05)
    assert lock.holder("run-4") is None
    assert all(not node._idle[0].unread for node in lock.masters.nodes)

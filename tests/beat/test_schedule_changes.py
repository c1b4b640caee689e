"""A schedule edited while three replicas run: every replica follows it within 2 s, and
no slot is sent twice through the changes. The schedule is a test source kept in Redis
(``tests.beat.app.RedisSource``); the scheduler does not know where its entries come from."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from celery_singleton_beat.testing import RedisServer, wait_for
from tests.support.clusters import beat_cluster, interval_slots, master_hash, slot_ms

pytestmark = pytest.mark.slow

SOURCE = {
    "singleton_beat_schedule_source": "tests.beat.app.RedisSource",
    "singleton_beat_claim_ttl": 1.0,
}
#: A change is acted on by every replica within this many seconds.
PICKUP = 2.0


def slots_of(rows: list[dict[str, Any]], entry: str) -> Counter[int]:
    return Counter(slot_ms(r["slot"]) for r in rows if r["entry"] == entry)


def within(counts: Counter[int], start: float, end: float) -> list[int]:
    return sorted(s for s in counts if start * 1000 < s <= end * 1000)


def test_added_changed_paused_resumed_and_removed_entries_are_followed_by_every_replica(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    paused = {"every": 1, "options": {"singleton_beat": {"paused": True}}}
    with beat_cluster(tmp_path, three_masters, {}, **SOURCE) as cluster:
        cluster.edit_source({"a": {"every": 1}})
        cluster.start_worker()
        for name in ("r1", "r2", "r3"):
            cluster.start_replica(name)
        wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
        start = time.time()
        time.sleep(3)
        added = cluster.edit_source({"a": {"every": 1}, "b": {"every": 1}})
        time.sleep(5)
        changed = cluster.edit_source({"a": {"every": 2}, "b": {"every": 1}})
        time.sleep(5)
        pause = cluster.edit_source({"a": {"every": 2}, "b": paused})
        time.sleep(5)
        resume = cluster.edit_source({"a": {"every": 2}, "b": {"every": 1}})
        time.sleep(5)
        removed = cluster.edit_source({"b": {"every": 1}})
        time.sleep(5)
        end = time.time() - 1.5
        rows = cluster.executions()
    a, b = slots_of(rows, "a"), slots_of(rows, "b")
    assert ([s for s, n in a.items() if n > 1], [s for s, n in b.items() if n > 1]) == ([], [])
    # a: every second until the change, every 2 s after it, nothing once removed
    assert sorted(interval_slots(1, start, changed) - set(a)) == []
    assert sorted(interval_slots(2, changed + PICKUP, removed) - set(a)) == []
    assert [s for s in within(a, changed + PICKUP, end) if s % 2000] == []
    assert within(a, removed + PICKUP, end) == []
    # b: from its first slot after it was added; nothing while paused; one coalesced
    # slot on resume, the missed ones counted as skipped
    assert within(b, 0, added) == []
    assert sorted(interval_slots(1, added + PICKUP, pause) - set(b)) == []
    assert within(b, pause + PICKUP, resume - 1) == []
    assert sorted(interval_slots(1, resume + PICKUP, end) - set(b)) == []
    assert master_hash(three_masters, "singleton-beat:entry:b")["skipped"] >= 2


def test_a_replica_starting_after_an_entry_came_back_sends_nothing_from_its_absence(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """The only replica sees "a" (every 6 s) leave and stops; "a" comes back just after a
    slot of its absence, while no replica runs; the next replica to start sends "a" from
    its next slot, not that slot of the absence (misfire coalesce would send it, late)."""
    with beat_cluster(tmp_path, three_masters, {}, **SOURCE) as cluster:
        cluster.edit_source({"a": {"every": 6}})
        cluster.start_worker()
        first = cluster.start_replica("r1")
        wait_for(lambda: len(cluster.executions()) >= 1, 30, "a first execution")
        gone = cluster.edit_source({})
        time.sleep(PICKUP)
        first.popen.terminate()
        first.popen.wait(10)
        absent = (int(gone + PICKUP) // 6 + 1) * 6  # a slot while "a" was gone
        time.sleep(max(0.0, absent + 0.3 - time.time()))
        back = cluster.edit_source({"a": {"every": 6}})
        cluster.start_replica("r2")
        wait_for(lambda: within(slots_of(cluster.executions(), "a"), absent, time.time()), 20,
                 "a slot after the start")  # fmt: skip
        time.sleep(1)
        rows = cluster.executions()
    assert back < absent + 6
    assert within(slots_of(rows, "a"), gone, absent + 1) == [], (gone, absent, back)
    assert within(slots_of(rows, "a"), absent + 1, absent + 7) == [(absent + 6) * 1000]

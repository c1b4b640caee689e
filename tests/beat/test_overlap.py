"""The overlap policy with three replicas and a task longer than its interval: ``skip``
sends no slot while the previous run waits or runs, ``buffer_one`` lets one wait; every
slot is either sent or held back (``skipped_overlap``), counted as such."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_singleton_beat.testing import RedisServer, wait_for
from tests.support.clusters import BeatCluster, beat_cluster, interval_slots, master_hash, slot_ms

pytestmark = pytest.mark.slow

RUN = 2.5
SCHEDULE = {
    "skip": {"every": 1, "task": "slow", "args": [RUN],
             "options": {"queue": "slow-skip", "singleton_beat": {"overlap": "skip"}}},
    "buffer": {"every": 1, "task": "slow", "args": [RUN],
               "options": {"queue": "slow-buffer", "singleton_beat": {"overlap": "buffer_one"}}},
}  # fmt: skip


def runs(cluster: BeatCluster, entry: str) -> list[dict[str, Any]]:
    assert cluster.broker is not None
    rows = [
        json.loads(r) for r in redis.Redis.from_url(cluster.broker.url).lrange("slow_runs", 0, -1)
    ]
    return sorted((r for r in rows if r["entry"] == entry), key=lambda r: r["start"])


def outcomes(masters: list[RedisServer], entry: str, slots: set[int]) -> dict[int, str]:
    """Each slot's fence outcome, as the majority of masters has it."""
    found: dict[int, str] = {}
    for slot in slots:
        values = [m.client().get(f"singleton-beat:fire:{entry}:{slot}") for m in masters]
        done = [v.decode() for v in values if v and v.startswith(b"done:")]
        found[slot] = max(set(done), key=done.count) if len(done) >= 2 else "undecided"
    return found


def test_skip_and_buffer_one_hold_back_slots_while_a_longer_run_is_not_done(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    with beat_cluster(tmp_path, three_masters, SCHEDULE, singleton_beat_claim_ttl=1.0) as cluster:
        cluster.queue = "slow-skip"
        cluster.start_worker("w-skip", concurrency=4)
        cluster.queue = "slow-buffer"
        cluster.start_worker("w-buffer", concurrency=1)
        for name in ("r1", "r2", "r3"):
            cluster.start_replica(name)
        wait_for(lambda: len(runs(cluster, "skip")) >= 1, 40, "a first run")
        start = time.time()
        time.sleep(16)
        end = time.time() - 1.5
        time.sleep(2 * RUN + 1)  # the runs sent before ``end`` finish
        skip, buffer = runs(cluster, "skip"), runs(cluster, "buffer")

    # skip: runs never overlap, though the worker could run four at once
    assert all(b["start"] >= a["end"] for a, b in itertools.pairwise(skip))
    # buffer_one: at most one run waits at any slot time
    waiting = [
        sum(1 for r in buffer if slot_ms(r["slot"]) <= slot_ms(s["slot"]) < r["start"] * 1000)
        for s in buffer
    ]
    assert max(waiting) <= 1, waiting
    # every slot of the window is either sent (and run once) or held back, counted
    for entry, done in (("skip", skip), ("buffer", buffer)):
        window = interval_slots(1, start, end)
        decided = outcomes(three_masters, entry, window)
        sent = {s for s, o in decided.items() if o == "done:dispatched"}
        held = {s for s, o in decided.items() if o == "done:skipped_overlap"}
        assert sent | held == window, (entry, sorted(window - sent - held))
        ran = [slot_ms(r["slot"]) for r in done if slot_ms(r["slot"]) in window]
        assert sorted(ran) == sorted(sent), entry
        assert len(held) >= len(window) // 3, (entry, len(held), len(window))
        assert master_hash(three_masters, f"singleton-beat:runstate:{entry}")["overlapped"] >= len(
            held
        )

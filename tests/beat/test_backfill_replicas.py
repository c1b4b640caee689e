"""Backfill, as real processes: three beat replicas (one SIGKILLed halfway), a worker, and
two overlapping backfills asked for at once from the command line."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.core.schema import DEFAULT_PREFIX, Outcome
from celery_singleton_beat.core.slots import slot_label
from celery_singleton_beat.stores import SlotOutcome
from celery_singleton_beat.stores.redis import RedisSlotStore
from celery_singleton_beat.testing import RedisServer, wait_for
from tests.support.clusters import FAST, beat_cluster, executed_slots

pytestmark = pytest.mark.slow

MINUTE = 60_000


def history(masters: list[RedisServer]) -> list[int]:
    """Thirty past slots of the one-minute entry ``report``, as beat would have left them:
    the first ten sent, the next ten skipped (misfire), the last ten never claimed."""
    store = RedisSlotStore(Masters.from_urls([m.url for m in masters], 1.0), DEFAULT_PREFIX)
    try:
        now = round(time.time() * 1000)
        ((_last, anchor),) = store.init([("report", MINUTE)], now)
        assert anchor is not None
        slots = [anchor - (30 - i) * MINUTE for i in range(30)]
        store.claim([("report", s) for s in slots[:20]], "past", ttl=5, retention=86400)
        store.finish(
            [SlotOutcome("report", s, (Outcome.DISPATCHED if i < 10 else Outcome.SKIPPED_MISFIRE)
             .value, int(i < 10), 0) for i, s in enumerate(slots[:20])], "past", 86400,
        )  # fmt: skip
    finally:
        store.close()
    return slots


def test_two_overlapping_backfills_on_three_replicas_one_killed_send_each_missing_slot_once(
    redis_cluster: Callable[[int], list[RedisServer]], tmp_path: Path
) -> None:
    masters = redis_cluster(3)
    slots = history(masters)
    with beat_cluster(tmp_path, masters, {"report": {"every": 60}}, **FAST) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2", "r3")]
        wait_for(
            lambda: all("entries loaded" in r.text() for r in replicas), 30, "replicas ticking"
        )
        ask = ["singleton-beat", "schedule", "backfill", "report", "--rate", "4"]
        first = cluster.start("backfill-a", [*ask, "--from", slot_label(slots[0]),
                                             "--to", slot_label(slots[19] + 1)])  # fmt: skip
        second = cluster.start("backfill-b", [*ask, "--from", slot_label(slots[5]),
                                              "--to", slot_label(slots[-1] + 1)])  # fmt: skip
        wait_for(lambda: len(cluster.executions()) >= 8, 30, "half the backfilled slots run")
        killed = next(r for r in replicas if r.name == "r1")
        killed.signal(signal.SIGKILL)
        wait_for(lambda: not (first.alive() or second.alive()), 60, "both backfills settled")
        assert (first.popen.returncode, second.popen.returncode) == (0, 0), second.text()
        wait_for(lambda: len(cluster.executions()) >= 20, 30, "every missing slot run")
        time.sleep(2)  # a second copy, if any, has had time to run
        rows = cluster.executions()
    ran = executed_slots(rows, "report")
    backfilled = Counter({s: n for s, n in ran.items() if s <= slots[-1]})
    assert backfilled == Counter(slots[10:]), "each slot that had not run, once; none that had"
    assert "done: 10 sent, 10 had run, 0 not settled" in first.text()
    assert "done: 20 sent, 5 had run, 0 not settled" in second.text()
    assert len({r["replica"] for r in rows if r["entry"] == "report"}) >= 2

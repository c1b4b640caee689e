"""Active replicas share the entries out: each claims its own share when due and another's
once it is late by the grace, so a killed or stopped replica's entries are taken over
within the grace, a joining replica takes its share, and no slot runs twice or goes
missing."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celery_singleton_beat.core.share import Share
from celery_singleton_beat.testing import Process, RedisServer, wait_for
from tests.support.clusters import FAST, beat_cluster, check_exactly_once, slot_ms

pytestmark = pytest.mark.slow

GRACE = 1.0
ENTRIES = {f"e{i}": {"every": 1} for i in range(12)}


def shared(replicas: list[Process], count: int, timeout: float = 30, times: int = 1) -> None:
    """Wait until each of ``replicas`` has logged ``times`` share-outs among ``count``."""
    line = f"{count} replica(s) share the entries"
    wait_for(
        lambda: all(r.text().count(line) >= times for r in replicas),
        timeout, f"the share-out among {count} ({times}x)",
    )  # fmt: skip


def check_sent_by_owner(rows: list[dict[str, Any]], owner: Callable[[str], str]) -> None:
    """Nearly every one of ``rows`` was sent by its entry's owner (an owner slowed down
    past the grace on a busy machine lets another replica send)."""
    by_owner = sum(r["replica"] == owner(r["entry"]) for r in rows)
    assert rows and by_owner >= 0.9 * len(rows), f"{by_owner} of {len(rows)} sent by the owner"


def owner_of_most(share: Share, ids: list[str]) -> str:
    """The replica that owns the most entries (at least one of the twelve)."""
    return max(ids, key=lambda i: sum(share.owner(e) == i for e in ENTRIES))


def test_a_killed_replica_s_share_is_taken_over_within_the_grace_and_no_slot_runs_twice(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    settings = {**FAST, "singleton_beat_share_grace": GRACE}
    with beat_cluster(tmp_path, three_masters, ENTRIES, **settings) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2", "r3")]
        ids = [cluster.replica_id(r) for r in replicas]
        shared(replicas, 3)
        share = Share(ids[0], ids)
        start = time.time() + 1.5  # slots sent before every replica knew the share-out
        time.sleep(5)
        owner = owner_of_most(share, ids)
        killed = cluster.replica_of(owner)
        owned = sorted(e for e in ENTRIES if share.owner(e) == owner)
        cluster.kill(killed)
        at = time.time()
        time.sleep(8)
        end = time.time() - 1.5
        rows = cluster.executions()
    for entry in ENTRIES:
        check_exactly_once(rows, entry, 1, start, end)
    before = [r for r in rows if start <= slot_ms(r["slot"]) / 1000 < at - 1]
    check_sent_by_owner(before, share.owner)
    owners = {share.owner(e) for e in ENTRIES}
    assert owners <= {r["replica"] for r in before}, "every replica sends its share"
    after = [r for r in rows if r["entry"] in owned and slot_ms(r["slot"]) / 1000 > at]
    late = max(r["at"] - slot_ms(r["slot"]) / 1000 for r in after)
    print(f"killed replica's {len(owned)} entries taken over; slots at most {late:.2f}s late")
    assert owned and late < GRACE + FAST["singleton_beat_claim_ttl"] + 1.0


def test_a_stopped_replica_s_share_is_taken_over_past_the_grace_and_it_takes_it_back(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """SIGSTOP past the grace, the claim TTL and the heartbeat window: the others send its
    entries' slots within the grace and leave it out of the share-out; SIGCONT: the slots
    it held due while frozen are not sent again, and it sends its own share once more."""
    settings = {**FAST, "singleton_beat_share_grace": GRACE}
    with beat_cluster(tmp_path, three_masters, ENTRIES, **settings) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2", "r3")]
        ids = [cluster.replica_id(r) for r in replicas]
        shared(replicas, 3)
        share = Share(ids[0], ids)
        start = time.time() + 1.5
        time.sleep(4)
        owner = owner_of_most(share, ids)
        stopped = cluster.replica_of(owner)
        others = [r for r in replicas if r is not stopped]
        owned = sorted(e for e in ENTRIES if share.owner(e) == owner)
        stopped.signal(signal.SIGSTOP)
        frozen = time.time()
        shared(others, 2, timeout=15)  # without the stopped replica
        left_out = time.time() - frozen
        time.sleep(2)
        stopped.signal(signal.SIGCONT)
        resumed = time.time()
        shared(others, 3, timeout=15, times=2)  # the resumed replica back
        back = time.time()
        time.sleep(5)
        end = time.time() - 1.5
        rows = cluster.executions()
    for entry in ENTRIES:
        check_exactly_once(rows, entry, 1, start, end)
    owned_rows = [r for r in rows if r["entry"] in owned]
    while_frozen = [r for r in owned_rows if frozen + 0.5 < slot_ms(r["slot"]) / 1000 < resumed]
    assert while_frozen and {r["replica"] for r in while_frozen} <= set(ids) - {owner}
    late = max(r["at"] - slot_ms(r["slot"]) / 1000 for r in while_frozen)
    print(
        f"stopped replica's {len(owned)} entries taken over, slots at most {late:.2f}s late; "
        f"left out of the share-out after {left_out:.1f}s, back {back - resumed:.1f}s after SIGCONT"
    )
    assert late < GRACE + FAST["singleton_beat_claim_ttl"] + 1.0
    again = [r for r in owned_rows if slot_ms(r["slot"]) / 1000 > back + 1]
    check_sent_by_owner(again, lambda _entry: owner)


def test_a_joining_replica_takes_its_share_and_no_slot_runs_twice(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """Two replicas share the entries out; a third starts: every slot still runs exactly
    once through the join, and the newcomer then sends the share it owns."""
    settings = {**FAST, "singleton_beat_share_grace": GRACE}
    with beat_cluster(tmp_path, three_masters, ENTRIES, **settings) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(name) for name in ("r1", "r2")]
        shared(replicas, 2)
        start = time.time() + 1.5
        time.sleep(3)
        replicas.append(cluster.start_replica("r3"))
        joined = time.time()
        shared(replicas, 3)
        settled = time.time()
        time.sleep(6)
        end = time.time() - 1.5
        rows = cluster.executions()
        ids = [cluster.replica_id(r) for r in replicas]
    for entry in ENTRIES:
        check_exactly_once(rows, entry, 1, start, end)
    share = Share(ids[0], ids)
    after = [r for r in rows if slot_ms(r["slot"]) / 1000 > settled + 1]
    print(f"the joining replica shared the entries {settled - joined:.1f}s after it started")
    check_sent_by_owner(after, share.owner)
    assert any(r["replica"] == ids[2] for r in after), "the newcomer sends its share"

"""One run of beat replicas through a failover of their Redis primary, counted.

Three replicas, a worker recording every execution, the primary SIGKILLed mid-run. With
``lag``, the replica stops replicating 2.5 s before the kill, so the writes of those
seconds never reach it. Beat replicas may die with the primary (they ran on its host),
and fresh ones start during the failover: they read the shared progress from the
promoted replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery_singleton_beat.testing import RedisServer, SentinelGroup, wait_for
from tests.support.clusters import FAST, beat_cluster, fence_outcomes, slot_accounting, slot_ms

SCHEDULE = {"two": {"every": 2}, "three": {"every": 3}}
#: The replica stops replicating 2.5 s before the kill; two of the three beat replicas
#: die with the primary (they ran on its host) and two fresh ones start during the
#: failover: they read the progress the promoted replica has.
LAGGED: dict[str, Any] = {"lag": True, "survivors": 1, "fresh": 2}


@dataclass
class Failover:
    """What one run through a failover gave."""

    faults: list[str]
    """What went wrong with the slots of the observed window (empty: nothing)."""
    exited: list[str]
    """Beat replicas that were not running at the end."""
    failover: float
    """Seconds from the kill until the new primary could be reached."""
    survivors: int
    """Beat replicas that ran through the failover."""
    first_publish: float
    """Seconds from the kill until the first execution of a slot."""
    before_kill: int
    """Executions before the kill."""
    forgotten: list[str]
    """Slots executed (and so marked done) at least half a second before the kill whose
    done mark the promoted replica does not have: progress that went backwards."""

    def check(self) -> None:
        """Every slot once or counted, no replica gone, and, when replicas ran through the
        failover, back within the failover time plus two seconds."""
        print(self)  # the run's figures, with -s or on failure
        assert self.before_kill >= 8, "beat published before the kill"
        assert (self.forgotten, self.faults, self.exited) == ([], [], [])
        if self.survivors:
            assert self.first_publish <= self.failover + 2, (self.first_publish, self.failover)


def through_failover(
    tmp_path: Path,
    group: SentinelGroup,
    endpoint: Any,
    *,
    lag: bool,
    survivors: int = 3,
    fresh: int = 1,
    moved: Callable[[RedisServer], None] = lambda promoted: None,
    **settings: Any,
) -> Failover:
    """Beat on ``endpoint`` (anything with a Redis ``url``: the group itself, or a proxy
    in front of its primary) through a kill of the group's primary. The first
    ``survivors`` of the three replicas live on, the others are killed with the primary;
    ``fresh`` new ones start 0.3 s after the kill; ``moved`` is called with the promoted
    replica once the Sentinels name it (to move a proxy)."""
    with beat_cluster(tmp_path, [endpoint], SCHEDULE, **FAST, **settings) as cluster:
        cluster.start_worker()
        replicas = [cluster.start_replica(f"r{n}") for n in (1, 2, 3)]

        def running() -> bool:
            return all(p.alive() for p in replicas)

        wait_for(lambda: len(cluster.executions()) >= 2 or not running(), 60, "executions")
        assert running(), replicas[0].text()[-1500:]
        start = time.time()
        time.sleep(8)
        primary = group.primary()
        if lag:
            group.replicas()[0].client().execute_command("REPLICAOF", "NO", "ONE")
            time.sleep(2.5)
        killed = time.time()
        primary.kill()
        for replica in replicas[survivors:]:
            cluster.kill(replica)
        replicas = replicas[:survivors]
        time.sleep(0.3)
        replicas += [cluster.start_replica(f"r{4 + n}") for n in range(fresh)]
        promoted = group.wait_for_failover(primary)
        moved(promoted)
        failover = time.time() - killed
        time.sleep(max(0.0, killed + 15 - time.time()))
        end = time.time()
        time.sleep(3)  # messages in flight reach the worker
        rows = cluster.executions()
        after = [r["at"] for r in rows if r["at"] > killed]
        marks = {entry: fence_outcomes([promoted], entry) for entry in SCHEDULE}
        forgotten = [
            f"{r['entry']} {r['slot']}: {marks[r['entry']].get(slot_ms(r['slot']))}"
            for r in rows
            if r["at"] <= killed - 0.5 and marks[r["entry"]].get(slot_ms(r["slot"])) != "dispatched"
        ]
        return Failover(
            faults=slot_accounting(rows, [promoted], SCHEDULE, (start, end)),
            exited=[p.name for p in replicas if not p.alive()],
            failover=failover,
            survivors=survivors,
            first_publish=min(after, default=float("inf")) - killed,
            before_kill=sum(1 for r in rows if r["at"] <= killed),
            forgotten=forgotten,
        )

"""Beat through a Sentinel failover: ours against RedBeat, through the same kill.

One primary, one replica and three Sentinels (``down-after-milliseconds 1000``) on
loopback; entries every 2 s and 3 s; three beat replicas and one worker recording every
execution; the primary SIGKILLed ``--kill-at`` seconds in, the run ``--seconds`` long. The
script acts as a supervisor: a beat process that exits is counted and started again.
Each scheduler runs once per round (``--rounds``), on a group of its own, ours first.

Per run it prints the failover time (kill until every Sentinel names the new primary),
the gap (the longest time without any execution, from the last one before the kill to
the end), the slots lost
(intervals of an entry with no execution: a gap of ``k`` intervals loses ``k - 1``), the
duplicates (two executions of an entry less than half an interval apart, or one task id
executed twice) and the beat process exits.

    python bench/failover.py [--seconds 60] [--kill-at 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from failover_app import SCHEDULE

from celery_singleton_beat.testing import CeleryCluster, Process, RedisServer, sentinel_group

HERE = Path(__file__).resolve().parent


@dataclass
class Run:
    scheduler: str
    failover: float
    gap: float
    lost: int
    duplicates: int
    executions: int
    exits: int


def run(scheduler: str, seconds: float, kill_at: float) -> Run:
    broker = RedisServer().start()
    try:
        with sentinel_group() as group, tempfile.TemporaryDirectory() as workdir:
            env = {
                "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
                "BENCH_BROKER": broker.url,
                "BENCH_SCHEDULER": scheduler,
                "BENCH_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels),
                "BENCH_MASTER_NAME": group.master_name,
            }
            cluster = CeleryCluster(
                Path(workdir), "failover_app", base_env=env, queue="failover-bench"
            )
            try:
                return _observe(cluster, group, broker, scheduler, (seconds, kill_at))
            finally:
                cluster.stop()
    finally:
        broker.stop()


def _observe(
    cluster: CeleryCluster, group: Any, broker: RedisServer, scheduler: str,
    timing: tuple[float, float],
) -> Run:  # fmt: skip
    """One run: (``seconds``, ``kill_at``) is ``timing``."""
    seconds, kill_at = timing
    cluster.start_worker()
    beats = [cluster.start_replica(f"beat{n}", scheduler=_scheduler(scheduler)) for n in (1, 2, 3)]
    client = redis.Redis.from_url(broker.url)
    while not client.llen("executions"):
        time.sleep(0.1)
    start = time.time()
    exits, failover, killed = 0, 0.0, 0.0
    while time.time() < start + seconds:
        if not killed and time.time() >= start + kill_at:
            primary = group.primary()
            killed = time.time()
            primary.kill()
            group.wait_for_failover(primary)
            failover = time.time() - killed
        for index, beat in enumerate(beats):
            if not beat.alive():  # a supervisor starts it again
                exits += 1
                beats[index] = _restart(cluster, beat)
        time.sleep(0.2)
    end = time.time()
    time.sleep(3)
    rows = [json.loads(r) for r in client.lrange("executions", 0, -1)]
    counted = _count(rows, (start, end), killed)
    return Run(scheduler, failover, exits=exits, **counted)


def _scheduler(name: str) -> str:
    return "redbeat.RedBeatScheduler" if name == "redbeat" else "singleton"


def _restart(cluster: CeleryCluster, beat: Process) -> Process:
    cluster.processes.remove(beat)
    return cluster.start_replica(beat.name, scheduler=beat.scheduler)


def _count(
    rows: list[dict[str, Any]], window: tuple[float, float], killed: float
) -> dict[str, Any]:
    """Gap, lost slots, duplicates and executions of the rows in ``window``."""
    start, end = window
    lost = duplicates = 0
    for entry, every in SCHEDULE.items():
        times = sorted(r["at"] for r in rows if r["entry"] == entry and start <= r["at"] <= end)
        for before, after in itertools.pairwise(times):
            step = after - before
            if step < every / 2:
                duplicates += 1
            lost += max(0, round(step / every) - 1)
    duplicates += sum(n - 1 for n in Counter(r["task_id"] for r in rows).values() if n > 1)
    times = sorted(r["at"] for r in rows if start <= r["at"] <= end)
    gap = max((b - a for a, b in itertools.pairwise([*times, end]) if b > killed), default=0.0)
    return {
        "gap": gap, "lost": lost, "duplicates": duplicates,
        "executions": sum(1 for r in rows if start <= r["at"] <= end),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill-at", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs = [
        run(scheduler, args.seconds, args.kill_at)
        for _ in range(args.rounds)
        for scheduler in ("singleton", "redbeat")
    ]
    print(
        f"beat through a Sentinel failover: 3 beat processes, entries every 2 s and 3 s, "
        f"{args.seconds:.0f} s, primary killed at {args.kill_at:.0f} s"
    )
    print(f"{'scheduler':<10} {'failover s':>10} {'gap s':>6} {'lost':>5} {'dupes':>6} "
          f"{'exits':>6} {'runs':>5}")  # fmt: skip
    for r in runs:
        name = "ours" if r.scheduler == "singleton" else "RedBeat"
        print(f"{name:<10} {r.failover:>10.1f} {r.gap:>6.1f} {r.lost:>5} {r.duplicates:>6} "
              f"{r.exits:>6} {r.executions:>5}")  # fmt: skip


if __name__ == "__main__":
    main()

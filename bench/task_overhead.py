"""What SingletonTask adds to a no-op task on one worker: plain Celery and celery-singleton.

Starts three redis-server masters and a Redis broker on free ports and one worker
(prefork pool, one child process) of bench/task_overhead_app.py. Sends the same number of
no-op messages of each variant, in interleaved rounds, each message with its own
argument (so no variant deduplicates): a plain task, SingletonTask over one and over
three masters, and celery-singleton's Singleton on one node (it locks when sending).

Prints, per variant: the cost of sending one message, the median time the worker spends
in the task call (lock, body, release), the median added over the plain task, and
throughput from first send to last completion.

    python bench/task_overhead.py [--messages 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from celery_singleton_beat.testing import CeleryCluster, redis_servers, wait_for  # noqa: E402

VARIANTS = ["plain", "ours_1", "ours_3", "celery_singleton"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="per variant")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    per_round = args.messages // args.rounds
    with redis_servers(4) as servers, tempfile.TemporaryDirectory() as workdir:
        *masters, broker = servers
        env = {
            "PYTHONPATH": f"{HERE}:{HERE.parent}",
            "BENCH_BROKER": broker.url,
            "BENCH_MASTERS": ",".join(m.url for m in masters),
        }
        sys.path.insert(0, str(HERE))
        import os

        os.environ.update(env)
        import task_overhead_app as bench_app

        cluster = CeleryCluster(Path(workdir), "task_overhead_app", env, queue="overhead")
        try:
            cluster.start_worker(pool="prefork", concurrency=1)
            results = run(bench_app, broker.url, per_round, args.rounds)
        finally:
            cluster.stop()
    report(results, per_round * args.rounds)


def run(bench_app: object, broker: str, per_round: int, rounds: int) -> dict[str, dict[str, float]]:
    client = redis.Redis.from_url(broker)
    send: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
    wall: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
    sequence = 0
    for _ in range(rounds):
        for name in VARIANTS:
            task = getattr(bench_app, name)
            done_before = client.llen(f"took:{name}")
            started = time.perf_counter()
            for _ in range(per_round):
                sequence += 1
                task.delay(sequence)
            send[name] += time.perf_counter() - started
            target = done_before + per_round
            wait_for(lambda n=name, t=target: client.llen(f"took:{n}") >= t, 120, f"{name} drained")
            wall[name] += time.perf_counter() - started
    results = {}
    for name in VARIANTS:
        took = [json.loads(x) for x in client.lrange(f"took:{name}", 0, -1)]
        failed = sum(1 for t in took if t is None)
        if failed:
            raise SystemExit(f"{name}: {failed} of {len(took)} runs failed; no figures")
        results[name] = {
            "send": send[name],
            "wall": wall[name],
            "median": statistics.median(took),
            "count": len(took),
        }
    return results


def report(results: dict[str, dict[str, float]], messages: int) -> None:
    base = results["plain"]
    print(f"{messages} no-op messages per variant, one prefork worker process, interleaved rounds")
    print(f"{'variant':<32} {'send µs':>8} {'task µs':>8} {'added µs':>9} {'tasks/s':>8}")
    labels = {
        "plain": "plain Celery task",
        "ours_1": "SingletonTask, 1 master",
        "ours_3": "SingletonTask, 3 masters",
        "celery_singleton": "celery-singleton, 1 node",
    }
    for name, row in results.items():
        send_us = row["send"] / messages * 1e6
        task_us = row["median"] * 1e6
        added = task_us - base["median"] * 1e6 + send_us - base["send"] / messages * 1e6
        print(f"{labels[name]:<32} {send_us:>8.0f} {task_us:>8.0f} {added:>9.0f} "
              f"{messages / row['wall']:>8.0f}")  # fmt: skip
    print("added µs = (send + task) minus the plain task's; goal: at most 1,000 µs with 3 masters")


if __name__ == "__main__":
    main()

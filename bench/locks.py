"""Uncontended acquire+release cycles: our Redlock against redis-py's Lock and pottery's Redlock.

Starts its own redis-server masters on free ports (the same servers serve every row),
runs the rows interleaved in several rounds so that machine noise spreads evenly, and
prints median and p99 latency per cycle and cycles per second.

    python bench/locks.py [--cycles 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.testing import redis_servers

Cycle = Callable[[], None]


def ours(urls: list[str]) -> tuple[Cycle, Callable[[], None]]:
    lock = Redlock.from_urls(urls, node_timeout=0.05)

    def cycle() -> None:
        lease = lock.acquire("bench", ttl=10.0)
        assert lease is not None
        lock.release(lease)

    return cycle, lock.close


def redis_py(url: str) -> tuple[Cycle, Callable[[], None]]:
    client = redis.Redis.from_url(url)

    def cycle() -> None:
        lock = client.lock("bench-redis-py", timeout=10.0)
        assert lock.acquire(blocking=False)
        lock.release()

    return cycle, client.close


def pottery(urls: list[str]) -> tuple[Cycle, Callable[[], None]]:
    from pottery import Redlock as PotteryRedlock

    masters = {redis.Redis.from_url(url) for url in urls}
    key = f"bench-pottery-{uuid.uuid4()}"
    lock = PotteryRedlock(key=key, masters=masters, auto_release_time=10)

    def cycle() -> None:
        assert lock.acquire(blocking=False)
        lock.release()

    def close() -> None:
        for master in masters:
            master.close()

    return cycle, close


def measure(cycle: Cycle, count: int) -> list[float]:
    for _ in range(50):
        cycle()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        cycle()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000, help="cycles per row per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    with redis_servers(5) as servers:
        urls = [s.url for s in servers]
        rows = {
            "ours, 1 master": ours(urls[:1]),
            "ours, 3 masters": ours(urls[:3]),
            "ours, 5 masters": ours(urls),
            "redis-py Lock, 1 node": redis_py(urls[0]),
            "pottery Redlock, 3 masters": pottery(urls[:3]),
            "pottery Redlock, 5 masters": pottery(urls),
        }
        samples: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, (cycle, _close) in rows.items():
                samples[name] += measure(cycle, args.cycles // args.rounds or 1)
        for _cycle, close in rows.values():
            close()
    print(f"acquire+release cycles, uncontended, {sum(map(len, samples.values()))} in all")
    print(f"{'lock':<28} {'cycles':>7} {'median µs':>10} {'p99 µs':>9} {'ops/s':>8}")
    medians = {}
    for name, values in samples.items():
        values.sort()
        medians[name] = statistics.median(values)
        p99 = values[int(len(values) * 0.99) - 1]
        print(
            f"{name:<28} {len(values):>7} {medians[name] * 1e6:>10.0f} {p99 * 1e6:>9.0f} "
            f"{1 / medians[name]:>8.0f}"
        )
    ours3, single = medians["ours, 3 masters"], medians["redis-py Lock, 1 node"]
    pottery3 = medians["pottery Redlock, 3 masters"]
    print(f"ours(3) / redis-py Lock(1) = {ours3 / single:.2f}  (goal: <= 1.30)")
    print(f"pottery(3) / ours(3)       = {pottery3 / ours3:.1f}  (goal: >= 8)")


if __name__ == "__main__":
    main()

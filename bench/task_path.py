"""The worker's task call, in one process: where the time of a singleton execution goes.

Runs no-op tasks through Celery's own tracer (``celery.app.trace.build_tracer``, what a
worker's pool process calls for each message) against redis-server masters started on
free ports, without a broker: what is left is the cost of the task call itself, from
``task_prerun`` to ``task_postrun``, lock, body, release and events included. Variants
are interleaved in rounds so that machine noise falls on each alike.

    python bench/task_path.py [--calls 2000] [--rounds 5] [--gap 0.001]
    python bench/task_path.py --only ours_3 --calls 500       # for a profiler
    valgrind --tool=callgrind python bench/task_path.py --only ours_3 --calls 200

``--gap`` sleeps that many seconds before each call, as a worker's pool process waits for
its next message: after a wait, the same code runs several times slower (caches and the
idle core have to warm up again), which is how it runs in a worker.

Variants: ``plain`` (a plain task), ``ours_1``/``ours_3`` (``SingletonTask`` over one and
three masters), ``slot_3`` (the same with beat's slot headers, as a re-publishable slot
message arrives), ``events_3`` (three masters with one event subscriber, as with the
metrics or the Django recorder installed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery import Celery
from celery.app.trace import build_tracer

from celery_singleton_beat import SingletonTask, events
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.tasks.singleton import ENTRY_HEADER, SLOT_HEADER
from celery_singleton_beat.testing import redis_servers

VARIANTS = ["plain", "ours_1", "ours_3", "slot_3", "events_3"]


def tracers(urls: list[str]) -> dict[str, Callable[[int], None]]:
    """One function per variant running one execution of a no-op task with argument i."""
    app = Celery("task-path", broker="memory://")
    app.conf.update(singleton_beat_redis_urls=urls, task_ignore_result=True)
    locks = {n: Redlock.from_urls(urls[:n], node_timeout=0.05) for n in (1, 3)}

    def noop(i: int) -> None:
        """No work."""

    def singleton(name: str, masters: int) -> Any:
        return app.task(name=name, base=SingletonTask, singleton_backend=locks[masters])(noop)

    tasks = {
        "plain": app.task(name="plain")(noop),
        "ours_1": singleton("ours_1", 1),
        "ours_3": singleton("ours_3", 3),
        "slot_3": singleton("slot_3", 3),
        "events_3": singleton("events_3", 3),
    }
    run = uuid.uuid4().hex[:8]

    def traced(name: str) -> Callable[[int], None]:
        trace = build_tracer(name, tasks[name], app=app, hostname="bench@host")

        def call(i: int) -> None:
            task_id = f"{run}-{name}-{i}"
            headers: dict[str, Any] = {"id": task_id, "task": name, "hostname": "bench@host"}
            if name == "slot_3":
                headers.update({ENTRY_HEADER: f"entry-{run}", SLOT_HEADER: f"{run}-{i}"})
            unsubscribe = events.subscribe(_count) if name == "events_3" else None
            try:
                outcome = trace(task_id, (i,), {}, headers)
            finally:
                if unsubscribe is not None:
                    unsubscribe()
            if outcome[1] is not None:  # the exception info of a failed run
                raise SystemExit(f"{name}: run {i} failed: {outcome[1]!r}; no figures")

        return call

    return {name: traced(name) for name in tasks}


_seen = [0]


def _count(event: events.Event) -> None:
    _seen[0] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="per variant")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=VARIANTS, help="run one variant (for a profiler)")
    parser.add_argument("--gap", type=float, default=0.0, help="seconds idle before each call")
    args = parser.parse_args()
    names = [args.only] if args.only else VARIANTS
    with redis_servers(3) as servers:
        calls = tracers([s.url for s in servers])
        for name in names:  # connections made, scripts loaded, caches warm
            for i in range(-50, 0):
                calls[name](i)
        samples: dict[str, list[float]] = {name: [] for name in names}
        rounds: dict[str, list[float]] = {name: [] for name in names}
        per_round = max(1, args.calls // args.rounds)
        sequence = 0
        for _ in range(args.rounds):
            for name in names:
                taken = []
                for _ in range(per_round):
                    sequence += 1
                    if args.gap:
                        time.sleep(args.gap)
                    started = time.perf_counter()
                    calls[name](sequence)
                    taken.append(time.perf_counter() - started)
                samples[name] += taken
                rounds[name].append(statistics.median(taken))
    report(samples, rounds, args.gap)


def report(samples: dict[str, list[float]], rounds: dict[str, list[float]], gap: float) -> None:
    count = len(next(iter(rounds.values())))
    idle = f", {gap * 1000:g} ms idle before each call" if gap else ""
    print(f"task call in one process (Celery's tracer, no broker), {count} interleaved rounds"
          f"{idle}")  # fmt: skip
    print(f"{'variant':<10} {'calls':>6} {'median µs':>10} {'rounds min-max':>15} {'added µs':>9}")
    base = statistics.median(samples["plain"]) if "plain" in samples else 0.0
    for name, values in samples.items():
        median = statistics.median(values)
        low, high = min(rounds[name]), max(rounds[name])
        added = f"{(median - base) * 1e6:>9.0f}" if base else f"{'-':>9}"
        print(f"{name:<10} {len(values):>6} {median * 1e6:>10.0f} "
              f"{low * 1e6:>7.0f}-{high * 1e6:<7.0f} {added}")  # fmt: skip


if __name__ == "__main__":
    main()

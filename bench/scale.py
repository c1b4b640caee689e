"""Large schedules: our scheduler beside Celery's own ``celery.beat.Scheduler`` and RedBeat,
in one run.

For each schedule size (interval entries that fall due far from now):

- **initialised**: seconds from making the scheduler until every entry is ready to be
  dispatched (ours: every entry's progress read from three Redis masters and its next
  slot known; Celery's: its in-memory schedule built; RedBeat's: every entry stored in
  its Redis, its broker's here, stopped after ``--cap`` seconds);
- **memory per entry**: the growth of the process's resident memory from just before the
  scheduler is made until then, per entry (the ``beat_schedule`` dict itself, the same
  for all, is made before, and the app is finalised and its broker transport loaded, as
  ``celery beat`` has them before it makes its scheduler);
- **idle tick**: the loop as ``celery beat`` runs it for 4 s, nothing due: the median
  and the longest ``tick()`` (ours: one tick in two writes a heartbeat).

Then a burst: ``--burst`` entries whose slots all fall due at once (the clock moved an
interval ahead), dispatched to a Redis broker by ours with one replica and with three
(three processes), by Celery's scheduler and by RedBeat (one replica: its lock lets one
send): slots per second until every slot is published, and the CPU seconds each process
spent. Celery's ``send_task`` rate on the same broker is printed as the ceiling.

Each measurement runs in a process of its own (memory figures do not mix).

    python bench/scale.py [--sizes 10000,100000,1000000] [--burst 100000] [--cap 60]

Celery's scheduler and RedBeat are stopped after ``--cap`` seconds of the burst (Celery's
tick compares the whole schedule with the previous one before sending one entry, so a
burst of 100,000 takes it hours; RedBeat reads each due entry, then writes it back and
sends it, one round trip or more each); a rate is then over the slots sent in the cap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import logging
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from celery import Celery, beat
from scheduler import send_task_ceiling  # bench/scheduler.py, beside this script

from celery_singleton_beat.beat import scheduler as ours
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import redis_servers

#: The queue every message goes to (bench/scheduler.py's ceiling sends there too).
QUEUE = os.environ.setdefault("BENCH_QUEUE", f"bench-scale-{uuid.uuid4().hex[:8]}")
#: Slots of the size runs fall due about a year from now: none during the run.
RARELY = 400 * 86400.0
#: The burst's interval: one slot per entry is due once the clock moves this far ahead.
HOURLY = 3600.0


def rss() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def schedule(entries: int, every: float) -> dict[str, Any]:
    return {f"customer-{i:07d}": {"task": "bench.noop", "schedule": every} for i in range(entries)}


def noop() -> None:
    """The entries' task."""


def make_app(broker: str, masters: list[str], entries: int, every: float) -> Celery:
    app = Celery("bench-scale", broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        singleton_beat_redis_urls=masters,
        singleton_beat_key_prefix=f"scale-{uuid.uuid4().hex[:6]}:",
        singleton_beat_claim_ttl=10.0,
        # a busy 2-core machine runs the masters, the broker and three replicas: a master
        # that answers a 500-slot batch in more than the default 50 ms is not down
        singleton_beat_node_timeout=0.25,
        singleton_beat_misfire_grace=3600.0,  # a slow burst sends every slot, however late
        singleton_beat_share_grace=1.0,  # the replicas of the burst share the entries out
        beat_schedule=schedule(entries, every),
    )
    app.task(name="bench.noop")(noop)
    return app


def as_beat_starts(app: Celery) -> Celery:
    """The app as ``celery beat`` has it before it makes the scheduler: finalised, its
    loader's modules imported, its broker's transport loaded (for the banner): what that
    imports is not counted as the schedule's memory."""
    app.finalize()
    app.loader.import_default_modules()
    app.amqp  # noqa: B018
    app.connection_for_write().transport  # noqa: B018
    return app


Idle = tuple[float, float]
"""An idle loop's median and longest tick, in ms."""


def idle_ms(tick: Any, entries: int, seconds: float = 4.0) -> Idle:
    """The loop as ``celery beat`` runs it (tick, then sleep what the tick asks) for
    ``seconds`` after a second of warm-up, nothing due: (median tick, longest tick) in ms.
    Ours ticks twice a second, one of them a heartbeat; Celery's once in the time
    (its tick asks to sleep until its next entry is due, capped at
    ``beat_max_loop_interval``)."""
    took = []
    for length, kept in ((1.0, False), (seconds, True)):
        until = time.monotonic() + length
        while time.monotonic() < until:
            started = time.perf_counter()
            delay = tick()
            if kept:
                took.append(time.perf_counter() - started)
            time.sleep(max(0.0, min(delay, until - time.monotonic())))
    return statistics.median(took) * 1000, max(took) * 1000


def size_ours(broker: str, masters: list[str], entries: int) -> tuple[float, float, Idle]:
    """(seconds until every entry is initialised, bytes per entry, idle ticks in ms)."""
    logging.disable(logging.WARNING)
    app = as_beat_starts(make_app(broker, masters, entries, RARELY))
    gc.collect()
    before, started = rss(), time.perf_counter()
    sched = ours.Scheduler(app=app)
    while not sched._initialized or sched.loader.loading:
        sched.tick()
    took = time.perf_counter() - started
    gc.collect()
    grown = rss() - before
    idle = idle_ms(sched.tick, entries)
    sched.close()
    return took, grown / entries, idle


def size_celery(broker: str, entries: int) -> tuple[float, float, Idle]:
    """The same for Celery's own in-memory scheduler."""
    app = as_beat_starts(make_app(broker, [], entries, RARELY))
    gc.collect()
    before, started = rss(), time.perf_counter()
    sched = beat.Scheduler(app=app)
    sched.tick()  # builds its heap of every entry
    took = time.perf_counter() - started
    gc.collect()
    grown = rss() - before
    idle = idle_ms(sched.tick, entries)
    return took, grown / entries, idle


def redbeat_app(broker: str, entries: int, every: float, **entry: Any) -> Celery:
    """An app whose entries RedBeat keeps in the broker's Redis, with no lock (one process),
    every entry given ``entry``'s fields too."""
    app = make_app(broker, [], 0, every)
    app.conf.update(
        redbeat_redis_url=broker,
        redbeat_lock_key=None,
        redbeat_key_prefix=f"redbeat-{uuid.uuid4().hex[:6]}:",
        beat_schedule={name: {**spec, **entry} for name, spec in schedule(entries, every).items()},
    )
    return app


def size_redbeat(broker: str, entries: int, cap: float) -> tuple[float, int, float, Idle]:
    """RedBeat storing every entry, a thousand at a time until ``cap`` seconds have passed:
    (seconds, entries stored, bytes per entry stored, idle ticks in ms)."""
    from redbeat import RedBeatScheduler

    logging.disable(logging.WARNING)
    app = as_beat_starts(redbeat_app(broker, entries, RARELY))
    stored, deadline = [0], [0.0]

    class Capped(RedBeatScheduler):  # type: ignore[misc]
        def update_from_dict(self, dict_: dict[str, Any]) -> None:
            items = iter(dict_.items())
            while time.perf_counter() < deadline[0]:
                chunk = dict(itertools.islice(items, 1000))
                if not chunk:
                    return
                super().update_from_dict(chunk)
                stored[0] += len(chunk)

    gc.collect()
    before, started = rss(), time.perf_counter()
    deadline[0] = started + cap
    sched = Capped(app=app)
    took = time.perf_counter() - started
    gc.collect()
    grown = rss() - before
    idle = idle_ms(sched.tick, entries)
    return took, stored[0], grown / max(stored[0], 1), idle


def burst_ours(
    broker: str, masters: list[str], entries: int, run: tuple[str, float, int]
) -> tuple[list[tuple[str, float]], float, float]:
    """One replica: register, then at ``start_at`` move the clock to just past the
    entries' next slot (the same for every entry: their anchor is the hour) and dispatch
    every slot due. (the slots this replica published, wall s, CPU s)."""
    logging.disable(logging.WARNING)
    prefix, start_at, replicas = run
    offset = 0.0
    app = make_app(broker, masters, entries, HOURLY)
    app.conf.singleton_beat_key_prefix = prefix
    Runtime.of(app).clock = lambda: time.time() + offset
    sched = ours.Scheduler(app=app)
    while not sched._initialized or sched.loader.loading:
        sched.tick()
    sched.producer  # connect before the clock starts  # noqa: B018
    published: list[tuple[str, float]] = []

    def count(event: Any) -> None:
        if isinstance(event, ours.events.SlotFired):
            published.append((event.entry, event.slot.timestamp()))

    unsubscribe = ours.events.subscribe(count)
    horizon = max(p.next_slot or 0 for p in sched.plans.values())  # the same for all
    while time.time() < start_at:  # beat runs: heartbeats, the share-out settles
        time.sleep(max(0.0, min(sched.tick(), start_at - time.time())))
    offset = horizon / 1000 + 0.5 - time.time()  # every slot due, none late
    cpu, started = time.process_time(), time.perf_counter()
    while any((p.next_slot or 0) <= horizon or p.held for p in sched.plans.values()):
        time.sleep(min(sched.tick(), 0.01))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    # beat runs on after its burst: a replica that left would hand the others its
    # share's slots to claim again (they are done)
    finished = redis.Redis.from_url(broker)
    finished.incr(f"{prefix}finished")
    while int(finished.get(f"{prefix}finished") or 0) < replicas:
        time.sleep(min(sched.tick(), 0.01))
    unsubscribe()
    sched.close()
    return published, wall, cpu


def burst_celery(broker: str, entries: int, cap: float) -> tuple[int, float, float]:
    """Celery's scheduler with every entry due at once, stopped after ``cap`` seconds (its
    tick compares the whole schedule with the previous one, then sends one entry)."""
    app = make_app(broker, [], entries, HOURLY)
    sent = [0]

    class Counted(beat.Scheduler):  # type: ignore[misc]
        def apply_async(self, *args: Any, **kwargs: Any) -> Any:
            sent[0] += 1
            return super().apply_async(*args, **kwargs)

    sched = Counted(app=app)
    sched.producer  # noqa: B018
    long_ago = app.now() - dt.timedelta(seconds=HOURLY + 1)
    for entry in sched.schedule.values():
        entry.last_run_at = long_ago
    sched._heap = None
    cpu, started = time.process_time(), time.perf_counter()
    while sent[0] < entries and time.perf_counter() - started < cap:
        sched.tick()
    return sent[0], time.perf_counter() - started, time.process_time() - cpu


def burst_redbeat(broker: str, entries: int, cap: float) -> tuple[int, float, float]:
    """RedBeat with every entry due at once (stored as last run long ago), stopped after
    ``cap`` seconds: its tick reads every due entry, then reserves and sends each."""
    from redbeat import RedBeatScheduler

    logging.disable(logging.WARNING)
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    app = redbeat_app(broker, entries, HOURLY, last_run_at=long_ago)
    sent, deadline = [0], [float("inf")]

    class Counted(RedBeatScheduler):  # type: ignore[misc]
        def maybe_due(self, entry: Any, **kwargs: Any) -> Any:
            if time.perf_counter() > deadline[0]:
                raise RuntimeError("the cap")  # its tick stops there and returns
            return super().maybe_due(entry, **kwargs)

        def apply_async(self, *args: Any, **kwargs: Any) -> Any:
            result = super().apply_async(*args, **kwargs)
            sent[0] += 1
            return result

    sched = Counted(app=app)  # stores every entry: not timed
    sched.producer  # noqa: B018
    cpu, started = time.process_time(), time.perf_counter()
    deadline[0] = started + cap
    while sent[0] < entries and time.perf_counter() < deadline[0]:
        sched.tick()
    return sent[0], time.perf_counter() - started, time.process_time() - cpu


def alone(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a fresh process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


Burst = tuple[str, int, float, list[float]]
"""(scheduler, slots published, wall s until the last, CPU s of each process)."""


def bursts(broker: str, masters: list[str], entries: int, cap: float) -> list[Burst]:
    rows: list[Burst] = []
    for replicas in (1, 3):
        prefix = f"burst-{uuid.uuid4().hex[:6]}:"
        start_at = time.time() + 15 + entries / 4000  # every replica registered by then
        with multiprocessing.get_context("spawn").Pool(replicas) as pool:
            runs = pool.starmap(
                burst_ours, [(broker, masters, entries, (prefix, start_at, replicas))] * replicas
            )
        redis.Redis.from_url(broker).delete(QUEUE)
        sent = [slot for run in runs for slot in run[0]]
        if len(set(sent)) != entries:
            raise SystemExit(f"{replicas} replica(s) published {len(set(sent))} of {entries}")
        again = len(sent) - entries  # a claim that expired: sent again, same task id
        name = f"ours, {replicas} replica(s)" + (f" ({again} sent again)" if again else "")
        rows.append((name, entries, max(r[1] for r in runs), [r[2] for r in runs]))
    sent, wall, cpu = alone(burst_celery, broker, entries, cap)
    redis.Redis.from_url(broker).delete(QUEUE)
    capped = f" ({sent:,} sent in the {cap:.0f} s cap)" if sent < entries else ""
    rows.append((f"celery.beat.Scheduler{capped}", sent, wall, [cpu]))
    sent, wall, cpu = alone(burst_redbeat, broker, entries, cap)
    redis.Redis.from_url(broker).delete(QUEUE)
    capped = f" ({sent:,} sent in the {cap:.0f} s cap)" if sent < entries else ""
    rows.append((f"RedBeat, 1 replica{capped}", sent, wall, [cpu]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--burst", type=int, default=100_000)
    parser.add_argument(
        "--cap",
        type=float,
        default=60.0,
        help="seconds Celery's scheduler and RedBeat get for the burst, RedBeat for its start",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with redis_servers(4) as servers:
        broker, masters = servers[0].url, [s.url for s in servers[1:]]
        print(f"{len(masters)} Redis masters, a Redis broker; Python {sys.version.split()[0]}")
        print()
        print(f"{'entries':>9} {'scheduler':<22} {'initialised':>12} {'memory/entry':>13} "
              f"{'idle tick (median, longest)':>28}")  # fmt: skip
        for entries in sizes:
            for name, function, given in (
                ("ours (3 masters)", size_ours, (broker, masters, entries)),
                ("celery.beat.Scheduler", size_celery, (broker, entries)),
                ("RedBeat", size_redbeat, (broker, entries, args.cap)),
            ):
                took, *stored, per_entry, idle = alone(function, *given)
                short = stored and stored[0] < entries
                capped = f" ({stored[0]:,} stored in the cap)" if short else ""
                print(f"{entries:>9,} {name:<22} {took:>10.2f} s {per_entry:>8,.0f} bytes "
                      f"{idle[0]:>9.3f} ms, {idle[1]:>9.3f} ms{capped}", flush=True)  # fmt: skip
        if args.burst:
            print()
            print(f"a burst of {args.burst:,} due slots")
            print(f"{'scheduler':<48} {'slots/s':>9} {'wall':>8}  CPU s per process")
            for name, sent, wall, cpus in bursts(broker, masters, args.burst, args.cap):
                print(f"{name:<48} {sent / wall:>9,.0f} {wall:>6.1f} s  "
                      f"{', '.join(f'{c:.1f}' for c in cpus)}", flush=True)  # fmt: skip
            rate = alone(send_task_ceiling, broker, min(args.burst, 20_000))
            print(f"{'send_task (the ceiling)':<48} {rate:>9,.0f}")


if __name__ == "__main__":
    main()

"""django-celery-beat's tables on PostgreSQL as the schedule: our scheduler beside
django-celery-beat's own ``DatabaseScheduler``, in one run.

With 10,000 ``PeriodicTask`` rows (intervals of 1-60 hours: nothing falls due during the
run), both schedulers in this process, each figure the median and p99:

- *poll*: one check for changes. Ours reads ``PeriodicTasks.last_update`` (one single-row
  query, on a connection kept open) and the schedule control's revision (one Redis
  ``GET``), at most once a second; DatabaseScheduler's ``schedule_changed()`` reads the
  same row after ``close_old_connections()`` (which, with ``CONN_MAX_AGE = 0``, means a
  new connection each time) and a commit, at each of its ticks;
- *idle tick*: each scheduler's loop run as ``celery beat`` runs it (tick, then sleep as
  long as the tick asks) for ``--idle`` seconds with nothing due and nothing changed:
  the time of one tick, and the ticks' time per second of idle (ours ticks twice a
  second: a heartbeat, and a poll halfway between heartbeats; DatabaseScheduler every
  5 s, its ``beat_max_loop_interval``);
- *pickup*: after one row is edited through the ORM, the time until the new schedule is
  ready in the scheduler: ours reads every enabled row and sorts the new plans against the
  running ones (``_replan``); DatabaseScheduler rebuilds its ``schedule`` dict
  (``all_as_schedule``). Neither includes the wait until the next poll (ours: at most 1 s;
  DatabaseScheduler: its next tick, at most 5 s);
- *save→replan*: ours only, from a save at a random moment of the running loop to the
  end of the replan, waits included: the save's change notice (this app's signal
  handlers, ``NOTIFY``) makes the next tick read the rows, at most half a second later.

Then, on a few rows only (every 1, 2, 3, 5 and 6 s), ``--replicas`` real ``celery beat``
processes of each scheduler in turn (``-S django_celery_beat.schedulers:DatabaseScheduler``,
then ``-S singleton`` with ``singleton_beat_schedule_source = "django_celery_beat"``) on
the same database and a Redis broker: the messages they publish to the queue in a
``--window`` of seconds, against the slots the schedule has in that window.

    python bench/django_celery_beat_source.py [--rows 10000] [--rounds 20] [--window 30]

The script creates a PostgreSQL database of its own (127.0.0.1:5432, user postgres) and
drops it at the end; it starts its own redis-servers (broker, lock master). It prints no
figures when a replica stopped early or a run published nothing for a row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "django_app")]
NAME = f"csb_bench_{os.getpid()}"
#: The rows of the replica runs: their interval in seconds.
EVERY = (1, 2, 3, 5, 6)
#: Headers of our messages: the entry, the slot, the replica that sent it.
ENTRY, SLOT, REPLICA = "singleton_beat_entry", "singleton_beat_slot", "singleton_beat_replica"
#: Seconds between the replicas' start and the window's (their first reads and ticks).
WARMUP = 3.0


class Failed(Exception):
    """A run did not do what the figures assume."""


def admin(sql: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
        db.execute(sql)


def fill(rows: int) -> None:
    from django.core.management import call_command
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    call_command("migrate", verbosity=0)
    intervals = [IntervalSchedule.objects.create(every=h, period="hours") for h in range(1, 61)]
    PeriodicTask.objects.bulk_create(
        PeriodicTask(name=f"entry-{i}", task="bench.noop", interval=intervals[i % 60])
        for i in range(rows)
    )
    PeriodicTasks.update_changed()


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms"


def timed(call: Any, rounds: int, before: Any = None) -> list[float]:
    spent = []
    for index in range(rounds):
        if before is not None:
            before(index)
        start = time.perf_counter()
        call()
        spent.append(time.perf_counter() - start)
    return spent


def idle_loop(
    tick: Any, seconds: float, warm: list[float]
) -> tuple[list[float], list[float], float]:
    """Each tick's wall and CPU time over ``seconds`` of beat's loop, and their wall time
    per second; ``warm`` is emptied after the first tick."""
    tick()  # the first tick builds what the next ones reuse
    warm.clear()
    wall, cpu = [], []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        begin, begin_cpu = time.perf_counter(), time.thread_time()
        delay = tick()
        wall.append(time.perf_counter() - begin)
        cpu.append(time.thread_time() - begin_cpu)
        time.sleep(max(0.0, min(delay, seconds - elapsed)))
    spent = time.monotonic() - start
    return wall, cpu, sum(wall) / spent, sum(cpu) / spent


def recorded(owner: Any, name: str, into: list[float]) -> None:
    """Time each call of ``owner.name`` into ``into``."""
    original = getattr(owner, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    setattr(owner, name, call)


def follow(ours: Any, index: int) -> float:
    """From a row's save, at a random moment of beat's loop, to the end of the replan that
    follows it (the save's own time, spent in the loop's thread here, is not slept).
    The loop runs first until no read is owed for an earlier change."""
    replan = ours._replan
    ended: list[float] = []

    def recorded_end(specs: Any) -> None:
        replan(specs)
        ended.append(time.perf_counter())

    watcher = ours._watcher  # settled: no read owed for an earlier change
    while watcher._again or watcher.version != ours.source.version():
        time.sleep(ours.tick())
    ours._replan = recorded_end
    delay = ours.tick()
    wait = random.uniform(0.0, delay)
    time.sleep(wait)
    begin = time.perf_counter()
    edit(index)
    saved = time.perf_counter()
    time.sleep(max(0.0, delay - wait - (saved - begin)))
    while not ended:
        delay = ours.tick()
        if not ended:
            time.sleep(delay)
    ours._replan = replan
    return ended[0] - saved


def edit(index: int) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    row = PeriodicTask.objects.get(name=f"entry-{index}")
    row.interval = IntervalSchedule.objects.get(every=(index % 59) + 2, period="hours")
    row.save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20, help="pickup rounds")
    parser.add_argument("--polls", type=int, default=200, help="poll rounds")
    parser.add_argument("--follow", type=int, default=10, help="save-to-replan rounds")
    parser.add_argument("--idle", type=float, default=10.0, help="idle seconds per scheduler")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--window", type=float, default=30.0, help="seconds counted per run")
    options = parser.parse_args()
    from celery_singleton_beat.testing import redis_servers

    admin(f'CREATE DATABASE "{NAME}"')
    try:
        with redis_servers(2) as (broker, master):
            os.environ.update(BENCH_DB_NAME=NAME, BENCH_BROKER=broker.url,
                              BENCH_MASTERS=master.url, BENCH_QUEUE=f"bench-{NAME}")  # fmt: skip
            from bench.django_celery_beat_app import app

            began = time.monotonic()
            fill(options.rows)
            filled = time.monotonic()
            lines = table(app, options)
            measured = time.monotonic()
            lines += replicas(broker.url, options.replicas, options.window)
            print(f"fill {filled - began:.0f} s, table {measured - filled:.0f} s, replicas "
                  f"{time.monotonic() - measured:.0f} s", file=sys.stderr)  # fmt: skip
    except Failed as exc:
        raise SystemExit(f"{exc}; no figures") from None
    finally:
        from django.db import connections

        connections.close_all()
        admin(f'DROP DATABASE "{NAME}" WITH (FORCE)')  # the recorder's thread may hold one
    print("\n".join(lines))


def table(app: Any, options: Any) -> list[str]:
    """Poll, idle tick and pickup, ours beside DatabaseScheduler, on the 10,000 rows."""
    from django_celery_beat.schedulers import DatabaseScheduler

    from celery_singleton_beat.beat.scheduler import Scheduler

    dcb = DatabaseScheduler(app=app, lazy=False)  # first: it saves a row of its own
    ours = Scheduler(app, lazy=False)
    while not ours._initialized or ours.loader.loading:  # every entry's progress read
        ours._load_state()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"{options.rows} PeriodicTask rows on PostgreSQL, Django's CONN_MAX_AGE = 0 "
             f"(load average {load}, {os.cpu_count()} CPUs)"]  # fmt: skip
    dcb_poll = timed(dcb.schedule_changed, options.polls)
    ours.source.version()  # DatabaseScheduler closed the connection the process shares
    table_only = next(s for s in getattr(ours.source, "sources", [ours.source])
                      if s.name == "django_celery_beat")  # fmt: skip
    poll = timed(ours.source.version, options.polls)
    row = timed(table_only.version, options.polls)
    lines += [f"poll         ours: {percentiles(poll)} ({options.polls} polls; the table's "
              f"row alone: {percentiles(row)}, the rest: schedule control's revision on Redis)",
              f"poll         DatabaseScheduler: {percentiles(dcb_poll)}"]  # fmt: skip
    sent: list[float] = []
    polls: list[float] = []
    recorded(ours.dispatcher, "dispatch", sent)
    recorded(ours, "_replan", sent)
    recorded(dcb, "apply_entry", sent)
    recorded(ours.source, "version", polls)
    for label, tick in (("ours", ours.tick), ("DatabaseScheduler", dcb.tick)):
        wall, cpu, busy, busy_cpu = idle_loop(tick, options.idle, polls)
        lines.append(f"idle tick    {label}: {percentiles(wall)} (CPU median "
                     f"{statistics.median(cpu) * 1000:.2f} ms); {len(wall)} ticks in "
                     f"{options.idle:g} s: {busy * 1000:.2f} ms per idle second (CPU "
                     f"{busy_cpu * 1000:.2f} ms)")  # fmt: skip
        if label == "ours":
            lines[-1] += (f", of which {len(polls)} polls: {sum(polls) / options.idle * 1000:.2f}"
                          f" ms")  # fmt: skip
    if sent:
        raise Failed(f"{len(sent)} dispatches or re-reads in the idle loops, which assume none")
    pickup = timed(lambda: ours._replan(ours.source.entries()), options.rounds, before=edit)
    rebuild = timed(dcb.all_as_schedule, options.rounds, before=lambda i: edit(i + options.rounds))
    from celery_singleton_beat.sources.watcher import POLL_EVERY

    lines += [f"pickup       ours: {percentiles(pickup)} (+ at most {POLL_EVERY:g} s until "
              f"the next poll)",
              f"pickup       DatabaseScheduler: {percentiles(rebuild)} (+ at most 5 s until "
              f"its next tick)"]  # fmt: skip
    edited = 2 * options.rounds
    followed = [follow(ours, edited + i) for i in range(options.follow)]
    lines.append(f"save→replan  ours: {percentiles(followed)} ({options.follow} saves at "
                 f"random moments of the running loop; poll wait included)")  # fmt: skip
    ours.close()
    return lines


def replicas(broker: str, count: int, window: float) -> list[str]:
    """Each scheduler's messages in ``window`` seconds with ``count`` replicas running."""
    slots = sum(round(window / every) for every in EVERY)
    lines = [f"{count} replicas of each, {len(EVERY)} rows (every {', '.join(map(str, EVERY))} s), "
             f"the messages of {window:g} s: {slots} slots in the schedule"]  # fmt: skip
    runs = {
        "DatabaseScheduler": "django_celery_beat.schedulers:DatabaseScheduler",
        "ours": "singleton",
    }
    for label, scheduler in runs.items():
        messages = run_replicas(broker, scheduler, count, window)
        headers = [m["headers"] for m in messages]
        tasks = Counter(h["task"] for h in headers)
        missing = [f"every_{s}s" for s in EVERY if not tasks[f"bench.every_{s}s"]]
        if missing:
            raise Failed(f"{label}: no message for {', '.join(missing)}")
        per_row = ", ".join(str(tasks[f"bench.every_{s}s"]) for s in EVERY)
        if scheduler == "singleton":  # each message names its slot and the replica that sent it
            sent = len({(h[ENTRY], h[SLOT]) for h in headers})
            senders = len({h[REPLICA] for h in headers})
            by = f"sent by {senders} of the {count} replicas"
        else:  # a message names no slot: the schedule's count is the slots'
            sent, by = slots, "the schedule's"
        lines.append(f"{label + ':':<19}{sent:4d} slots ({by}), {len(messages):4d} messages, "
                     f"{len(messages) - sent:4d} duplicates (per row: {per_row})")  # fmt: skip
    return lines


def reset_rows() -> None:
    """The replica runs' rows only (a plain ``DELETE``: ``QuerySet.delete()`` would send
    django-celery-beat's change signal once per row, 10,000 queries)."""
    from django.db import connection
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(PeriodicTask._meta.db_table)}")
    for every in EVERY:
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        PeriodicTask.objects.create(name=f"every-{every}s", task=f"bench.every_{every}s",
                                    interval=interval)  # fmt: skip
    PeriodicTasks.update_changed()


def run_replicas(broker: str, scheduler: str, count: int, window: float) -> list[dict[str, Any]]:
    """The messages ``count`` replicas publish in ``window`` seconds, once all have started."""
    import redis

    from celery_singleton_beat.testing import CeleryCluster, wait_for

    reset_rows()
    queue = os.environ["BENCH_QUEUE"]
    client = redis.Redis.from_url(broker)
    with tempfile.TemporaryDirectory() as workdir:
        cluster = CeleryCluster(Path(workdir), "bench.django_celery_beat_app",
                                base_env={"PYTHONPATH": str(ROOT)})  # fmt: skip
        try:
            started = [cluster.start_replica(f"beat-{i}", scheduler) for i in range(count)]
            wait_for(lambda: all("beat: Starting..." in p.text() for p in started), 60,
                     f"{count} replicas of {scheduler} started")  # fmt: skip
            time.sleep(WARMUP)
            client.delete(queue)
            time.sleep(window)
            with client.pipeline(transaction=True) as pipe:
                raw, _ = pipe.lrange(queue, 0, -1).delete(queue).execute()
            stopped = [p for p in started if not p.alive()]
            if stopped:
                raise Failed(f"{scheduler}: {stopped[0].name} stopped early:\n"
                             f"{stopped[0].text()[-2000:]}")  # fmt: skip
        finally:
            cluster.stop()
    return [json.loads(message) for message in raw]


if __name__ == "__main__":
    main()

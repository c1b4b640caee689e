"""10,000 django-celery-beat ``PeriodicTask`` rows on PostgreSQL: what following the table
costs our scheduler, beside django-celery-beat's own ``DatabaseScheduler``, in one run.

Figures (each the median and p99 of ``--rounds`` rounds):

- *idle poll*: ours reads ``PeriodicTasks.last_update`` (one single-row query) once a
  second when nothing changed; DatabaseScheduler runs the same query in
  ``schedule_changed()`` at each of its syncs;
- *pickup*: after one row is edited through the ORM, the time until the new schedule is
  ready in the scheduler: ours reads every enabled row and sorts the new plans against the
  running ones (``_replan``); DatabaseScheduler rebuilds its ``schedule`` dict
  (``all_as_schedule``). Neither includes the wait until the next poll (ours: at most 1 s;
  DatabaseScheduler: its sync interval, ``beat_max_loop_interval``, 5 s by default).

    python bench/django_celery_beat_source.py [--rows 10000] [--rounds 20]

The script creates a PostgreSQL database of its own (127.0.0.1:5432, user postgres) and
drops it at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "django_app")]
NAME = f"csb_bench_{os.getpid()}"


def configure() -> None:
    from django.conf import settings

    settings.configure(
        USE_TZ=True, TIME_ZONE="UTC", SECRET_KEY="bench",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_celery_beat"],
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": NAME,
                               "USER": "postgres", "HOST": "127.0.0.1", "PORT": "5432"}},
    )  # fmt: skip
    import django

    django.setup()


def admin(sql: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
        db.execute(sql)


def fill(rows: int) -> None:
    from django.core.management import call_command
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    call_command("migrate", verbosity=0)
    intervals = [IntervalSchedule.objects.create(every=s, period="seconds") for s in range(1, 61)]
    PeriodicTask.objects.bulk_create(
        PeriodicTask(name=f"entry-{i}", task="bench.noop", interval=intervals[i % 60])
        for i in range(rows)
    )
    PeriodicTasks.update_changed()


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:8.2f} ms   p99 {p99 * 1000:8.2f} ms"


def timed(call: Any, rounds: int, before: Any = None) -> list[float]:
    spent = []
    for index in range(rounds):
        if before is not None:
            before(index)
        start = time.perf_counter()
        call()
        spent.append(time.perf_counter() - start)
    return spent


def edit(index: int) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    row = PeriodicTask.objects.get(name=f"entry-{index}")
    row.interval = IntervalSchedule.objects.get(every=(index % 59) + 2, period="seconds")
    row.save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    admin(f'CREATE DATABASE "{NAME}"')
    try:
        configure()
        fill(options.rows)
        run(options.rows, options.rounds)
    finally:
        from django.db import connections

        connections.close_all()
        admin(f'DROP DATABASE "{NAME}"')


def run(rows: int, rounds: int) -> None:
    from celery import Celery
    from django_celery_beat.schedulers import DatabaseScheduler

    from celery_singleton_beat.scheduler import Scheduler
    from celery_singleton_beat.testing import redis_servers

    with redis_servers(1) as (master,):
        app = Celery("bench", broker="memory://", set_as_current=False)
        app.conf.update(
            singleton_beat_redis_urls=master.url,
            singleton_beat_schedule_source="django_celery_beat",
        )
        ours = Scheduler(app, lazy=False)
        ours._load_state()
        dcb = DatabaseScheduler(app=app, lazy=False)
        print(f"{rows} PeriodicTask rows on PostgreSQL, {rounds} rounds each")
        poll = timed(ours.source.version, rounds)
        print(f"idle poll    ours: {percentiles(poll)}")
        dcb_poll = timed(dcb.schedule_changed, rounds)
        print(f"idle poll    DatabaseScheduler: {percentiles(dcb_poll)}")
        pickup = timed(lambda: ours._replan(ours.source.entries()), rounds, before=edit)
        print(f"pickup       ours: {percentiles(pickup)} (+ at most 1 s until the next poll)")
        rebuild = timed(dcb.all_as_schedule, rounds, before=lambda i: edit(i + rounds))
        print(f"pickup       DatabaseScheduler: {percentiles(rebuild)} (+ up to its sync "
              f"interval, beat_max_loop_interval: 5 s by default)")  # fmt: skip
        ours.close()


if __name__ == "__main__":
    main()

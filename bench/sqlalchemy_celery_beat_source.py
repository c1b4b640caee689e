"""sqlalchemy-celery-beat's tables on PostgreSQL, RabbitMQ as the broker, no Redis: its own
``DatabaseScheduler`` beside ours, on the same rows, in one run.

Rows every 1, 2, 3, 5 and 6 s; ``--replicas`` real ``celery beat`` processes of each
scheduler in turn (``-S sqlalchemy_celery_beat.schedulers:DatabaseScheduler``, as its
users run it with ``-S sqlalchemy``, then ``-S singleton`` with
``singleton_beat_schedule_source = "sqlalchemy_celery_beat"`` and
``singleton_beat_store = "sqlalchemy"``). The script reads every message they publish to
its queue: those of a ``--window`` of seconds against the slots the rows have in it, and
every message of the run against the rows' ``total_run_count`` at the end.

    python bench/sqlalchemy_celery_beat_source.py [--replicas 3] [--window 30]
        [--postgres postgresql://postgres@127.0.0.1:5432] [--broker amqp://guest:guest@127.0.0.1:5672//]

The script creates a PostgreSQL database of its own and drops it at the end, and a queue
of its own, deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from kombu import Connection, Consumer, Queue
from sqlalchemy.orm import Session
from sqlalchemy_celery_beat.models import IntervalSchedule, PeriodicTask

from celery_singleton_beat.connections.sqlalchemy import engine_for, upgrade
from celery_singleton_beat.core.schema import Header
from celery_singleton_beat.testing import CeleryCluster

EVERY = (1, 2, 3, 5, 6)
THEIRS = "sqlalchemy_celery_beat.schedulers:DatabaseScheduler"
QUEUE = f"bench-scb-{uuid.uuid4().hex[:8]}"
ROOT = Path(__file__).resolve().parent.parent


class Received:
    """Every message on the queue: (when it arrived, entry, slot header or None)."""

    def __init__(self, broker: str) -> None:
        self.rows: list[tuple[float, str, str | None]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._consume, args=(broker,), daemon=True)
        self.thread.start()

    def _consume(self, broker: str) -> None:
        with Connection(broker) as connection:
            queue = Queue(QUEUE, durable=True)
            with Consumer(connection, [queue], callbacks=[self._on], accept=["json"]):
                while not self.stopped.is_set():
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=0.2)

    def _on(self, body: Any, message: Any) -> None:
        headers = message.headers or {}
        self.rows.append((time.time(), str(headers["argsrepr"]).strip("()[]',\""),
                          headers.get(Header.SLOT.value)))  # fmt: skip
        message.ack()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


def make_rows(url: str) -> None:
    engine = engine_for(url).execution_options(schema_translate_map={"celery_schema": None})
    PeriodicTask.metadata.create_all(engine)
    with Session(engine) as session:
        for every in EVERY:
            interval = IntervalSchedule(every=every, period="seconds")
            session.add(interval)
            session.flush()
            row = PeriodicTask(name=f"every-{every}", task="bench.noop", args=f'["every-{every}"]')
            row.schedule_model = interval
            session.add(row)
        session.commit()


def reset_rows(url: str) -> None:
    with engine_for(url).begin() as connection:
        connection.exec_driver_sql(
            "UPDATE celery_periodictask SET total_run_count = 0, last_run_at = NULL"
        )
        connection.exec_driver_sql("DELETE FROM singleton_beat_counted_slots")


def run_counts(url: str) -> int:
    with engine_for(url).connect() as connection:
        return int(connection.exec_driver_sql(
            "SELECT SUM(total_run_count) FROM celery_periodictask").scalar() or 0)  # fmt: skip


def run(  # noqa: PLR0917  (one scheduler's run)
    scheduler: str, url: str, broker: str, replicas: int, window: float, workdir: Path
) -> dict[str, Any]:
    reset_rows(url)
    received = Received(broker)
    cluster = CeleryCluster(workdir, "bench.sqlalchemy_celery_beat_app", base_env={
        "PYTHONPATH": str(ROOT), "BENCH_BROKER": broker, "BENCH_DBURI": url,
        "BENCH_QUEUE": QUEUE})  # fmt: skip
    try:
        for i in range(replicas):
            cluster.start_replica(f"{'ours' if scheduler == 'singleton' else 'theirs'}-{i}",
                                  scheduler)  # fmt: skip
        time.sleep(8)  # every replica started and ticking
        start = time.time()
        time.sleep(window)
        end = time.time()
        if any(not p.alive() for p in cluster.processes):
            raise SystemExit(f"{scheduler}: a replica stopped early; no figures")
    finally:
        cluster.stop()
    time.sleep(1)
    received.stop()
    inside = [r for r in received.rows if start <= r[0] < end]
    expected = sum(int(window // every) for every in EVERY)
    slots = Counter((entry, slot) for _at, entry, slot in inside if slot is not None)
    return {
        "published": len(inside),
        "expected": expected,
        "twice": sum(n - 1 for n in slots.values() if n > 1),
        "all": len(received.rows),
        "counted": run_counts(url),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    name = f"csb_bench_scb_{os.getpid()}"
    server = sa.make_url(args.postgres).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    url = server.set(database=name).render_as_string(hide_password=False)
    results = {}
    try:
        upgrade(engine_for(url))
        make_rows(url)
        workdir = Path(f"/tmp/{name}")
        workdir.mkdir(exist_ok=True)
        for scheduler in (THEIRS, "singleton"):
            results[scheduler] = run(scheduler, url, args.broker, args.replicas, args.window,
                                     workdir)  # fmt: skip
    finally:
        engine_for(url).dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        with Connection(args.broker) as connection:
            Queue(QUEUE, durable=True)(connection.default_channel).delete()
    rows = ", ".join(f"every {e} s" for e in EVERY)
    print(f"{len(EVERY)} rows ({rows}), {args.replicas} replicas each, a {args.window:.0f} s "
          f"window, RabbitMQ, PostgreSQL")  # fmt: skip
    print(f"{'scheduler':<34} {'slots':>6} {'published':>9} {'per slot':>8} "
          f"{'slot twice':>10} {'run msgs':>8} {'total_run_count':>15}")  # fmt: skip
    for scheduler, r in results.items():
        label = (
            "DatabaseScheduler (-S sqlalchemy)" if scheduler == THEIRS else "ours (-S singleton)"
        )
        print(f"{label:<34} {r['expected']:>6} {r['published']:>9} "
              f"{r['published'] / r['expected']:>8.2f} {r['twice']:>10} {r['all']:>8} "
              f"{r['counted']:>15}")  # fmt: skip
    print(
        "slot twice: messages with a slot header already seen (ours sends one); run msgs: "
        "every message of the run; total_run_count: the rows' sum at the end"
    )


if __name__ == "__main__":
    main()

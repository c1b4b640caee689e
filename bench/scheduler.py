"""A 10,000-entry schedule (intervals 1-60 s): our scheduler against RedBeat, in one run.

Every entry is made due at once (ours: the wall clock is moved 61 s ahead after the
entries are registered; RedBeat: entries that never ran are due), and the benchmark
times how long it takes until every one of those slots is published to a real Redis
broker. It counts Redis round trips per dispatched slot (ours: one round trip reaches
all masters at once) and the cost of a tick when nothing is due, with 10 and with 10,000
entries. Ours runs with one replica and with three (three processes racing for the same
slots); RedBeat runs one (its design: one lock holder dispatches). Ours also runs on the
database slot store on PostgreSQL (--postgres, default the local server; a database of
the script's own, dropped at the end; --no-postgres skips it), through the Django app and
through SQLAlchemy (the same statements on a SQLAlchemy engine's connection), each with one
replica and with three, and with one replica that does not publish ("no pub": the store
and the scheduler without the broker); their trips are SQL statements. And on the etcd
store, on one etcd member of the script's own (one replica, no publish, three; --no-etcd
skips it, --only-etcd runs it alone), and the same on the ZooKeeper store, on one
standalone member (--no-zookeeper, --only-zookeeper): their trips are requests to the
member. With --share-grace S the replicas share the entries out (each claims its share
when due and another's once late by S seconds; the three-replica rows say "shared").

    python bench/scheduler.py [--entries 10000] [--broker amqp://guest:guest@127.0.0.1:5672//]
                              [--postgres postgresql://postgres@127.0.0.1:5432 | --no-postgres]
                              [--only-postgres] [--no-etcd | --only-etcd]
                              [--no-zookeeper | --only-zookeeper] [--share-grace S]

Without --broker a redis-server started by the script is the broker. With --broker, the
messages go to a queue of the script's own, deleted at the end.

RedBeat runs in a process of its own, stopped after --redbeat-cap seconds (default 60):
on a busy machine its 10,000-entry tick can take minutes, and it is then reported as
"> N s" (with the slots it had published by then). The script prints no figures when
one of our runs published a slot twice or left an entry without a slot published.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery import Celery
from kombu import Queue

from celery_singleton_beat.beat import scheduler as ours
from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.core.slots import slot_task_id
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import redis_servers
from celery_singleton_beat.testing.etcd import etcd_cluster
from celery_singleton_beat.testing.zookeeper import zookeeper_server

#: The queue every message goes to; inherited by the benchmark's own processes.
QUEUE = os.environ.setdefault("BENCH_QUEUE", f"bench-{uuid.uuid4().hex[:8]}")


def queued(broker: str) -> int:
    """Messages waiting in the benchmark's queue."""
    app = Celery("bench-count", broker=broker)
    with app.connection_for_write() as connection:
        declared = Queue(QUEUE, channel=connection.default_channel).queue_declare()
        return int(declared.message_count)


def delete_queue(broker: str) -> None:
    app = Celery("bench-cleanup", broker=broker)
    with app.connection_for_write() as connection:
        Queue(QUEUE, channel=connection.default_channel).delete()


def beat_schedule(entries: int) -> dict[str, Any]:
    return {
        f"entry-{i:05d}": {"task": "bench.noop", "schedule": float(1 + i % 60)}
        for i in range(entries)
    }


class RoundTrips:
    """Counts Masters.exchange calls: each is one round trip to every master at once."""

    def __init__(self) -> None:
        self.count = 0
        original = Masters.exchange

        def counted(masters: Masters, nodes: Any, batches: Any) -> Any:
            self.count += 1
            return original(masters, nodes, batches)

        Masters.exchange = counted  # type: ignore[method-assign]


class SqlStatements:
    """Counts SQL statements of the SQLAlchemy store (its round trips)."""

    def __init__(self) -> None:
        from celery_singleton_beat.connections.sqlalchemy import SqlAlchemyDatabase

        self.count = 0
        original = SqlAlchemyDatabase.transaction
        counter = self

        class Counted:
            def __init__(self, cursor: Any) -> None:
                self.cursor = cursor

            def __getattr__(self, name: str) -> Any:
                return getattr(self.cursor, name)

            def execute(self, *args: Any) -> Any:
                counter.count += 1
                return self.cursor.execute(*args)

        @contextmanager
        def counted(database: Any) -> Iterator[Any]:
            with original(database) as cursor:
                yield Counted(cursor)

        SqlAlchemyDatabase.transaction = counted  # type: ignore[method-assign]


class EtcdCalls:
    """Counts the etcd store's requests to its member (its round trips)."""

    def __init__(self) -> None:
        from celery_singleton_beat.connections.etcd import Etcd

        self.count = 0
        original = Etcd.call

        def counted(client: Etcd, path: str, body: Any, what: str = "answer") -> Any:
            self.count += 1
            return original(client, path, body, what)

        Etcd.call = counted  # type: ignore[method-assign]


class ZooKeeperCalls:
    """Counts the ZooKeeper store's pipelined batches to its member (its round trips)."""

    def __init__(self) -> None:
        from celery_singleton_beat.connections.zookeeper import ZooKeeper

        self.count = 0
        original = ZooKeeper._send

        def counted(client: ZooKeeper, *args: Any) -> Any:
            self.count += 1
            return original(client, *args)

        ZooKeeper._send = counted  # type: ignore[method-assign]


class Statements:
    """Counts SQL statements on the database store's connection (its round trips)."""

    def __init__(self) -> None:
        from django.db import connections

        self.count = 0
        connections["default"].execute_wrappers.append(self)

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


def django_setup(database: dict[str, Any]) -> None:
    """Django on the benchmark's database, for the database slot store (once a process)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DATABASES={"default": database},
            INSTALLED_APPS=["django_celery_singleton_beat"],
            USE_TZ=True,
            SINGLETON_BEAT_RECORD=False,
        )
        django.setup()


@contextmanager
def bench_database(url: str) -> Iterator[dict[str, Any]]:
    """A PostgreSQL database of the script's own, migrated, dropped at the end."""
    import psycopg
    from django.core.management import call_command
    from django.db import connections

    parts = urlsplit(url)
    name = f"csb_bench_{os.getpid()}"
    server = {"user": parts.username or "postgres", "host": parts.hostname or "127.0.0.1",
              "port": parts.port or 5432, "password": parts.password or ""}  # fmt: skip
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    database = {
        "ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": server["user"],
        "PASSWORD": server["password"], "HOST": server["host"], "PORT": str(server["port"]),
    }  # fmt: skip
    try:
        django_setup(database)
        call_command("migrate", verbosity=0)
        connections.close_all()
        upgrade_sqlalchemy(database)
        yield database
    finally:
        connections.close_all()
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sqlalchemy_url(database: dict[str, Any]) -> str:
    """The benchmark's database as the SQLAlchemy store reaches it (psycopg 3)."""
    password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
    return (f"postgresql+psycopg://{database['USER']}{password}@{database['HOST']}:"
            f"{database['PORT']}/{database['NAME']}")  # fmt: skip


def upgrade_sqlalchemy(database: dict[str, Any]) -> None:
    """The SQLAlchemy store's tables in the benchmark's database (``db upgrade``)."""
    from celery_singleton_beat.connections.sqlalchemy import engine_for, upgrade

    engine = engine_for(sqlalchemy_url(database))
    upgrade(engine)
    engine.dispose()


def empty_store(database: dict[str, Any] | None = None) -> None:
    """Forget a previous run's slots (the database stores have no key prefix): the Django
    store's, or with ``database`` the SQLAlchemy store's."""
    if database is not None:
        import sqlalchemy as sa

        from celery_singleton_beat.connections.sqlalchemy import engine_for, metadata

        engine = engine_for(sqlalchemy_url(database))
        with engine.begin() as connection:
            for table in metadata.sorted_tables:
                connection.execute(sa.delete(table))
        engine.dispose()
        return
    from django.db import connections

    from django_celery_singleton_beat.models import (
        ReplicaHeartbeat,
        SlotAnchor,
        SlotEntry,
        SlotFence,
    )  # fmt: skip

    for model in (ReplicaHeartbeat, SlotAnchor, SlotEntry, SlotFence):
        model.objects.all().delete()
    connections.close_all()


def our_app(  # noqa: PLR0917  (the store is the last two)
    broker: str,
    masters: list[str],
    entries: int,
    prefix: str,
    database: Any = None,
    sqlalchemy: bool = False,
) -> Celery:
    app = Celery("bench", broker=broker)
    app.conf.update(
        task_default_queue=QUEUE,
        singleton_beat_redis_urls=masters,
        singleton_beat_key_prefix=prefix,
        singleton_beat_claim_ttl=10.0,
        singleton_beat_share_grace=share_grace(),
        beat_schedule=beat_schedule(entries),
    )
    if database is not None and "ZOOKEEPER" in database:
        app.conf.update(
            singleton_beat_store="zookeeper",
            singleton_beat_zookeeper_hosts=database["ZOOKEEPER"],
            singleton_beat_redis_urls=None,
        )
    elif database is not None and "ETCD" in database:
        app.conf.update(
            singleton_beat_store="etcd",
            singleton_beat_etcd_endpoints=database["ETCD"],
            singleton_beat_etcd_timeout=2.0,
            singleton_beat_redis_urls=None,
        )
    elif database is not None and sqlalchemy:
        app.conf.update(
            singleton_beat_store="sqlalchemy",
            singleton_beat_sqlalchemy_url=sqlalchemy_url(database),
            singleton_beat_redis_urls=None,
        )
    elif database is not None:
        django_setup(database)
        app.conf.update(singleton_beat_store="database", singleton_beat_redis_urls=None)
    return app


def share_grace() -> float:
    """``--share-grace`` (the spawned replicas read it from the environment)."""
    return float(os.environ.get("BENCH_SHARE_GRACE", "0"))


def three_row(label: str) -> str:
    """A three-replica row's name: whether they share the entries out."""
    return f"{label}, shared" if share_grace() else label


def registered(sched: ours.Scheduler) -> None:
    """Tick until every entry's progress is read: a large schedule loads a few batches per
    tick (within a time budget), and an entry first read after the clock jump would owe no
    slot from before it."""
    sched.tick()
    while sched.loader.loading:
        sched.tick()


def run_ours(  # noqa: PLR0917  (called positionally through Pool.starmap)
    broker: str,
    masters: list[str],
    entries: int,
    prefix: str,
    start_at: float,
    publish: bool = True,
    database: dict[str, Any] | None = None,
    sqlalchemy: bool = False,
) -> tuple[int, float, int, list[tuple[str, int]]]:
    """Register on a stopped clock, then at ``start_at`` jump 61 s past it and dispatch
    every due slot.

    Returns (slots this process published, seconds until all were done, round trips, the
    (entry, slot) of each slot published). With ``publish`` false the message is not sent
    (the scheduler's own cost alone).

    Every slot published counts, the few past the jump included: a replica whose pass
    starts more than a second after the jump finds a newer slot due for the 1-second
    entries and rightly coalesces the one at the jump into it.

    The clock stands still while the entries register (on a slow store a large schedule
    takes several ticks to read, and slots falling due meanwhile would be dispatched
    before the measurement starts).
    """
    logging.disable(logging.WARNING)  # one "missed slots" line per entry is not the point
    stopped: float | None = time.time()
    app = our_app(broker, masters, entries, prefix, database, sqlalchemy)
    Runtime.of(app).clock = lambda: stopped if stopped is not None else time.time() + 61.0
    sched = ours.Scheduler(app=app)
    if not publish:
        sched.publish_slot = lambda plan, slot: slot_task_id(plan.name, slot)
    registered(sched)  # every entry and its anchor
    sched.producer  # connect to the broker before the clock starts  # noqa: B018
    if time.time() > start_at:
        print(f"note: {entries} entries registered {time.time() - start_at:.1f} s after the "
              "planned jump; the jump follows at once", file=sys.stderr)  # fmt: skip
    burst = int((start_at + 61) * 1000)
    trips: RoundTrips | Statements | SqlStatements | EtcdCalls | ZooKeeperCalls = (
        RoundTrips()
        if database is None
        else EtcdCalls()
        if "ETCD" in database
        else ZooKeeperCalls()
        if "ZOOKEEPER" in database
        else SqlStatements()
        if sqlalchemy
        else Statements()
    )
    published: list[tuple[str, int]] = []
    missed: dict[str, int] = {}

    def count(event: Any) -> None:
        if isinstance(event, ours.events.SlotFired):
            published.append((event.entry, round(event.slot.timestamp() * 1000)))
        elif isinstance(event, ours.events.SlotSkipped) and event.reason == "misfire":
            slot = round(event.slot.timestamp() * 1000)
            missed[event.entry] = max(slot, missed.get(event.entry, slot))

    def owed(plan: Any) -> bool:
        """A slot of the burst still to decide; or older slots counted missed while the
        newest, which stands for them, is still to send (it fell in a chunk that pass did
        not reach: a later pass sends it, or a newer one that coalesces it)."""
        if (plan.next_slot or 0) <= burst:
            return True
        newest_missed = missed.get(plan.name)
        return newest_missed is not None and plan.next_slot <= plan.slots.next_after(newest_missed)

    unsubscribe = ours.events.subscribe(count)
    time.sleep(max(0.0, start_at - time.time()))
    stopped = None
    started = time.perf_counter()
    while any(owed(p) for p in sched.plans.values()):
        sched.tick()
    elapsed = time.perf_counter() - started
    sched.close()
    unsubscribe()
    return len(published), elapsed, trips.count, published


def checked(name: str, runs: list[Any], entries: int) -> int:
    """The slots published by ``runs`` (one per replica) between them; no figures when a
    slot was published twice or an entry not at all."""
    sent = [pair for run in runs for pair in run[3]]
    if len(set(sent)) != len(sent):
        raise SystemExit(f"{name}: {len(sent) - len(set(sent))} slots published twice; no figures")
    missing = entries - len({entry for entry, _slot in sent})
    if missing:
        raise SystemExit(f"{name}: {missing} of {entries} entries published nothing; no figures")
    return len(sent)


def send_task_ceiling(broker: str, count: int) -> float:
    """Messages per second that Celery's own send_task reaches on this broker."""
    app = Celery("bench-ceiling", broker=broker)
    app.conf.task_default_queue = QUEUE
    with app.producer_or_acquire() as producer:
        started = time.perf_counter()
        for i in range(count):
            app.send_task("bench.noop", (), {}, producer=producer, task_id=f"ceiling-{i}")
        return count / (time.perf_counter() - started)


def idle_tick_us(  # noqa: PLR0917  (the store is the last two)
    broker: str,
    masters: list[str],
    entries: int,
    prefix: str,
    database: dict[str, Any] | None = None,
    sqlalchemy: bool = False,
) -> float:
    """Microseconds per tick when nothing is due (median of 2,000)."""
    now = time.time()
    app = our_app(broker, masters, entries, prefix, database, sqlalchemy)
    Runtime.of(app).clock = lambda: now
    sched = ours.Scheduler(app=app)
    registered(sched)
    samples = []
    for _ in range(2000):
        started = time.perf_counter()
        sched.tick()
        samples.append(time.perf_counter() - started)
    sched.close()
    return statistics.median(samples) * 1e6


def run_redbeat(broker: str, redis_url: str, entries: int) -> tuple[int, float, int, float]:
    import redis.connection
    from redbeat import RedBeatScheduler

    app = Celery("bench-redbeat", broker=broker)
    app.conf.update(
        task_default_queue=QUEUE,
        redbeat_redis_url=redis_url,
        redbeat_lock_key=None,
        redbeat_key_prefix=f"redbeat-{uuid.uuid4().hex[:6]}:",
        beat_schedule=beat_schedule(entries),
        beat_max_loop_interval=1,
    )
    sched = RedBeatScheduler(app=app)
    sched.producer  # noqa: B018
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    for name in app.conf.beat_schedule:  # due at once, like ours after the jump
        key = sched.Entry.generate_key(app, name)
        sched.Entry.from_key(key, app=app).reschedule(last_run_at=long_ago)
    sends = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(connection: Any, command: Any, check_health: bool = True) -> Any:
        sends[0] += 1
        return original(connection, command, check_health)

    before = queued(broker)
    redis.connection.AbstractConnection.send_packed_command = counted
    started = time.perf_counter()
    sched.tick()  # one tick handles every due entry
    elapsed = time.perf_counter() - started
    trips = sends[0]
    published = queued(broker) - before
    samples = []
    for _ in range(200):
        begun = time.perf_counter()
        sched.tick()
        samples.append(time.perf_counter() - begun)
    redis.connection.AbstractConnection.send_packed_command = original
    return published, elapsed, trips, statistics.median(samples) * 1e6


def capped_redbeat(
    broker: str, redis_url: str, entries: int, cap: float
) -> tuple[int, float | None, int, float]:
    """:func:`run_redbeat` in its own process, stopped after ``cap`` seconds; then
    (slots published by then, None, 0, nan)."""
    before = queued(broker)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pending = pool.apply_async(run_redbeat, (broker, redis_url, entries))
        try:
            published, elapsed, trips, idle = pending.get(timeout=cap)
        except multiprocessing.TimeoutError:
            pool.terminate()
            return queued(broker) - before, None, 0, float("nan")
    return published, elapsed, trips, idle


def database_rows(broker: str, n: int, lead: float, url: str) -> list[tuple[Any, ...]]:
    """Ours on PostgreSQL, through the Django app and through SQLAlchemy: one replica, one
    that does not publish, then three."""
    rows: list[tuple[Any, ...]] = []
    with bench_database(url) as database:
        for sqlalchemy, label in ((False, "Django"), (True, "SQLAlchemy")):
            rows += store_rows(broker, n, lead, database, sqlalchemy, label)
    return rows


def store_rows(  # noqa: PLR0917  (the rows of one store)
    broker: str, n: int, lead: float, database: dict[str, Any], sqlalchemy: bool, label: str
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    empty = database if sqlalchemy else None
    idle = [idle_tick_us(broker, [], k, "db:", database, sqlalchemy) for k in (10, n)]
    empty_store(empty)
    one = run_ours(broker, [], n, "db:", time.time() + lead, True, database, sqlalchemy)
    checked(f"ours on PostgreSQL, {label} (one replica)", [one], n)
    rows.append((f"PG {label}", 1, one[0], one[1], one[2] / max(one[0], 1), idle))
    empty_store(empty)
    bare = run_ours(broker, [], n, "db:", time.time() + lead, False, database, sqlalchemy)
    checked(f"ours on PostgreSQL, {label} (no publish)", [bare], n)
    rows.append((f"PG {label}, no pub", 1, bare[0], bare[1], bare[2] / max(bare[0], 1), idle))
    empty_store(empty)
    start_at = time.time() + 5 + lead
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        three = pool.starmap(
            run_ours, [(broker, [], n, "db:", start_at, True, database, sqlalchemy)] * 3
        )
    total = checked(f"ours on PostgreSQL, {label} (three replicas)", three, n)
    seconds = max(r[1] for r in three)
    trips = sum(r[2] for r in three)
    rows.append((three_row(f"PG {label}"), 3, total, seconds, trips / max(total, 1), idle))
    empty_store(empty)
    return rows


def etcd_rows(broker: str, n: int, lead: float) -> list[tuple[Any, ...]]:
    """Ours on one etcd member: one replica, one that does not publish, then three."""
    with etcd_cluster(1) as members:
        store = {"ETCD": members.endpoints}
        return consensus_rows("etcd, 1 member", "etcd", store, broker, n, lead)


def zookeeper_rows(broker: str, n: int, lead: float) -> list[tuple[Any, ...]]:
    """Ours on one standalone ZooKeeper member, as on etcd."""
    with zookeeper_server() as member:
        store = {"ZOOKEEPER": member.name}
        return consensus_rows("ZooKeeper, 1 member", "ZooKeeper", store, broker, n, lead)


def consensus_rows(  # noqa: PLR0917  (one store's rows)
    label: str, kind: str, store: dict[str, Any], broker: str, n: int, lead: float
) -> list[tuple[Any, ...]]:
    """One replica, one that does not publish, then three, on the store ``store`` names.

    The lead before the jump is at least three times what the idle runs took to register
    their entries: a store that answers slowly (ZooKeeper) takes longer than ``lead`` to
    register them, three replicas at once longer still, and the replicas jump together."""
    begun = time.perf_counter()
    idle = [idle_tick_us(broker, [], k, f"idle-{k}:", store) for k in (10, n)]
    lead = max(lead, 3 * (time.perf_counter() - begun))
    one = run_ours(broker, [], n, "one:", time.time() + lead, True, store)
    checked(f"ours on {kind} (one replica)", [one], n)
    progress(f"{label}, 1 replica", one)
    bare = run_ours(broker, [], n, "bare:", time.time() + lead, False, store)
    checked(f"ours on {kind} (no publish)", [bare], n)
    progress(f"{kind}, no publish", bare)
    start_at = time.time() + 5 + lead
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        three = pool.starmap(run_ours, [(broker, [], n, "three:", start_at, True, store)] * 3)
    total = checked(f"ours on {kind} (three replicas)", three, n)
    return [
        (label, 1, one[0], one[1], one[2] / max(one[0], 1), idle),
        (f"{kind}, no publish", 1, bare[0], bare[1], bare[2] / max(bare[0], 1), idle),
        (three_row(label), 3, total, max(r[1] for r in three),
         sum(r[2] for r in three) / max(total, 1), idle),
    ]  # fmt: skip


def progress(row: str, run: Any) -> None:
    """A row's figures as soon as they are measured (stderr), before the table: a slower
    row after it may be stopped without losing them."""
    slots, seconds = run[0], run[1]
    print(
        f"{row}: {slots} slots in {seconds:.2f} s, {slots / seconds:.0f} slots/s",
        file=sys.stderr,
        flush=True,
    )


def heartbeat_ms(database: dict[str, Any], sqlalchemy: bool, rounds: int = 60) -> list[float]:
    """Milliseconds of the tick that writes a heartbeat (once a second, the costliest idle
    tick: one transaction that also reads the runtime schedule's revision), each after a
    pause as beat takes one: median and p99 of ``rounds``."""
    app = our_app("memory://", [], 10, "db:", database, sqlalchemy)
    sched = ours.Scheduler(app=app)
    sched.tick()
    store = Runtime.of(app).store
    samples = []
    for i in range(rounds):
        time.sleep(0.2)
        started = time.perf_counter()
        store.heartbeat(f"bench:{i}", {"host": "bench", "pid": i, "ttl": 5.0}, 5.0)
        samples.append((time.perf_counter() - started) * 1000)
    sched.close()
    samples.sort()
    return [statistics.median(samples), samples[int(len(samples) * 0.99) - 1]]


def redis_rows(  # noqa: PLR0917  (the Redis rows of one run)
    args: Any, broker: str, masters: list[str], redis_url: str, n: int, lead: float
) -> list[tuple[Any, ...]]:
    """Ours on three Redis masters (one replica, no publish, three), and RedBeat."""
    one = run_ours(broker, masters, n, f"bench-{uuid.uuid4().hex[:6]}:", time.time() + lead)
    bare = run_ours(broker, masters, n, f"bench-{uuid.uuid4().hex[:6]}:", time.time() + lead, False)
    prefix = f"bench-{uuid.uuid4().hex[:6]}:"
    start_at = time.time() + 5 + lead
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        three = pool.starmap(run_ours, [(broker, masters, n, prefix, start_at)] * 3)
    idle = [idle_tick_us(broker, masters, k, f"idle-{k}-{uuid.uuid4().hex[:4]}:") for k in (10, n)]
    red = capped_redbeat(broker, redis_url, n, args.redbeat_cap)
    red_idle_small = capped_redbeat(broker, redis_url, 10, args.redbeat_cap)[3]
    checked("ours (one replica)", [one], n)
    checked("ours (no publish)", [bare], n)
    total = checked("ours (three replicas)", three, n)
    seconds = max(r[1] for r in three)
    trips = sum(r[2] for r in three)
    return [
        ("ours, 3 masters", 1, one[0], one[1], one[2] / max(one[0], 1), idle),
        ("ours, no publish", 1, bare[0], bare[1], bare[2] / max(bare[0], 1), idle),
        (three_row("ours, 3 masters"), 3, total, seconds, trips / max(total, 1), idle),
        ("RedBeat, 1 node", 1, red[0], red[1], red[2] / max(red[0], 1), [red_idle_small, red[3]]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--broker", help="broker URL (default: a local redis-server)")
    parser.add_argument("--redbeat-cap", type=float, default=60.0, help="seconds")
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL for the database store's rows",
    )  # fmt: skip
    parser.add_argument("--no-postgres", action="store_true", help="skip the database stores")
    parser.add_argument(
        "--only-postgres", action="store_true", help="the database stores' rows alone"
    )
    parser.add_argument("--no-etcd", action="store_true", help="skip the etcd store")
    parser.add_argument("--only-etcd", action="store_true", help="the etcd store's rows alone")
    parser.add_argument("--no-zookeeper", action="store_true", help="skip the ZooKeeper store")
    parser.add_argument(
        "--only-zookeeper", action="store_true", help="the ZooKeeper store's rows alone"
    )
    parser.add_argument(
        "--share-grace", type=float, default=0.0,
        help="seconds: replicas share the entries out (singleton_beat_share_grace); 0, the "
        "default: each of the three replicas claims every slot",
    )  # fmt: skip
    parser.add_argument(
        "--heartbeats", action="store_true",
        help="only the database stores' heartbeat tick, each after a pause",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ["BENCH_SHARE_GRACE"] = str(args.share_grace)
    if args.heartbeats:
        with bench_database(args.postgres) as database:
            for sqlalchemy, label in ((False, "Django"), (True, "SQLAlchemy")):
                median, p99 = heartbeat_ms(database, sqlalchemy)
                print(f"heartbeat tick, PG {label:<10}: median {median:.2f} ms, p99 {p99:.2f} ms")
        return
    n = args.entries
    rows = []
    with redis_servers(4) as servers:
        *masters, local = (s.url for s in servers)
        broker = args.broker or local
        lead = 3 + n / 2000  # time to register every entry before the jump
        only = args.only_postgres or args.only_etcd or args.only_zookeeper
        if not only:
            rows += redis_rows(args, broker, masters, servers[0].url, n, lead)
        ceiling = send_task_ceiling(broker, n)
        skip_postgres = args.no_postgres or (only and not args.only_postgres)
        on_database = [] if skip_postgres else database_rows(broker, n, lead, args.postgres)
        if not (args.no_etcd or (only and not args.only_etcd)):
            on_database += etcd_rows(broker, n, lead)
        if not (args.no_zookeeper or (only and not args.only_zookeeper)):
            on_database += zookeeper_rows(broker, n, lead)
        if args.broker:
            delete_queue(broker)
    rows += on_database
    kind = args.broker.split(":")[0] if args.broker else "redis"
    print(f"{n} entries (intervals 1-60 s), all due at once, published to a {kind} broker")
    print(f"{'scheduler':<22} {'replicas':>8} {'slots':>6} {'seconds':>8} {'slots/s':>8} "
          f"{'trips/slot':>10} {'idle tick µs (10 | ' + str(n) + ' entries)':>30}")  # fmt: skip
    for name, replicas, slots, secs, per_slot, (small, large) in rows:
        if secs is None:
            capped = f"> {args.redbeat_cap:.0f}"
            print(f"{name:<22} {replicas:>8} {slots:>6} {capped:>8} {'-':>8} {'-':>10} "
                  f"{small:>17.0f} | -")  # fmt: skip
            continue
        print(f"{name:<22} {replicas:>8} {slots:>6} {secs:>8.2f} {slots / secs:>8.0f} "
              f"{per_slot:>10.3f} {small:>17.0f} | {large:.0f}")  # fmt: skip
    print(f"Celery's own send_task on the same broker, alone: {ceiling:.0f} messages/s")
    print(
        "trips/slot: ours counts round trips to all masters at once; RedBeat, commands or "
        "pipelines sent to its one node. Both also publish each message to the broker."
    )


if __name__ == "__main__":
    main()

"""Uncontended acquire+release cycles: our Redlock against redis-py's Lock and pottery's Redlock.

Starts its own redis-server masters on free ports (the same servers serve every row),
runs the rows interleaved in several rounds so that machine noise spreads evenly, and
prints median and p99 latency per cycle, the lowest and highest per-round median, and
cycles per second, then the ratios against the goals. Prints nothing but the failure if
any cycle failed.

Rows: ours with the release waited for (as redis-py's and pottery's are), ours with the
release posted (``release_nowait``, as a finishing ``SingletonTask`` releases), and the
floor: the same two scripts sent to three masters on raw sockets, one ``poll()`` for the
replies, no library at all. Then one primary with one replica and three Sentinels: ours
on the primary's URL (each grant waits for the replica, ``WAIT`` in the same round trip),
ours with ``min_replicas=0`` (no ``WAIT``), ours through the Sentinels, beside redis-py's
``Lock`` on the same primary. Then a Redis Cluster of its own (3 primaries, a replica
each): ours, each lock waiting for its shard's replica (the default) and without
(``min_replicas=0``), and redis-py's ``Lock`` through its ``RedisCluster`` client (which
does not wait). Then the locks on a consensus system and on a database: ours on one
ZooKeeper member (ephemeral holder znode, versioned transaction) and the SQLAlchemy lock
on PostgreSQL (a database of its own on 127.0.0.1:5432, made and dropped by the script).

    python bench/locks.py [--cycles 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import select
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from celery_singleton_beat.connections.resp import pack
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.testing import redis_cluster_servers, redis_servers, sentinel_group
from celery_singleton_beat.testing.zookeeper import zookeeper_server

Cycle = Callable[[], None]


class Failed(Exception):
    """A cycle that did not acquire or release: the figures would not mean anything."""


def ours(urls: list[str], posted: bool = False, **options: Any) -> tuple[Cycle, Callable[[], None]]:
    lock = Redlock.from_urls(urls, node_timeout=0.05, **options)
    key = f"bench-{len(urls)}-{posted}-{len(options)}"

    def cycle() -> None:
        lease = lock.acquire(key, ttl=10.0)
        if lease is None:
            raise Failed(f"ours ({len(urls)} masters): acquire refused")
        if posted:
            lock.release_nowait(lease)
        elif not lock.release(lease):
            raise Failed(f"ours ({len(urls)} masters): release refused")

    return cycle, lock.close


def floor(urls: list[str]) -> tuple[Cycle, Callable[[], None]]:
    """The same scripts on raw sockets: send to every master, one poll(), read."""
    socks = []
    for url in urls:
        host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            pack([("SCRIPT", "LOAD", Redlock.ACQUIRE), ("SCRIPT", "LOAD", Redlock.RELEASE)])
        )
        socks.append(sock)
    for sock in socks:
        sock.recv(1024)
    acquire_sha = hashlib.sha1(Redlock.ACQUIRE.encode()).hexdigest()
    release_sha = hashlib.sha1(Redlock.RELEASE.encode()).hexdigest()
    acquire = pack([("EVALSHA", acquire_sha, 2, "floor:lock", "floor:fence", "t", 10000, 0)])
    release = pack([("EVALSHA", release_sha, 1, "floor:lock", "t")])

    def round_trip(data: bytes) -> None:
        for sock in socks:
            sock.sendall(data)
        poller = select.poll()
        for sock in socks:
            poller.register(sock, select.POLLIN)
        waiting = len(socks)
        while waiting:
            for fd, _ in poller.poll(1000):
                poller.unregister(fd)
                waiting -= 1
        for sock in socks:
            if sock.recv(1024)[:1] != b":":
                raise Failed("floor: unexpected reply")

    def cycle() -> None:
        round_trip(acquire)
        round_trip(release)

    def close() -> None:
        for sock in socks:
            sock.close()

    return cycle, close


def redis_py(url: str) -> tuple[Cycle, Callable[[], None]]:
    client = redis.Redis.from_url(url)
    key = f"bench-redis-py-{url}"

    def cycle() -> None:
        lock = client.lock(key, timeout=10.0)
        if not lock.acquire(blocking=False):
            raise Failed("redis-py Lock: acquire refused")
        lock.release()

    return cycle, client.close


def redis_py_cluster(url: str) -> tuple[Cycle, Callable[[], None]]:
    """redis-py's ``Lock`` on a Redis Cluster, through its ``RedisCluster`` client."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(url.partition("?")[0])

    def cycle() -> None:
        lock = client.lock("bench-redis-py", timeout=10.0)
        if not lock.acquire(blocking=False):
            raise Failed("redis-py Lock on the cluster: acquire refused")
        lock.release()

    return cycle, client.close


def pottery(urls: list[str]) -> tuple[Cycle, Callable[[], None]]:
    from pottery import Redlock as PotteryRedlock

    masters = {redis.Redis.from_url(url) for url in urls}
    key = f"bench-pottery-{uuid.uuid4()}"
    lock = PotteryRedlock(key=key, masters=masters, auto_release_time=10)

    def cycle() -> None:
        if not lock.acquire(blocking=False):
            raise Failed(f"pottery ({len(urls)} masters): acquire refused")
        lock.release()

    def close() -> None:
        for master in masters:
            master.close()

    return cycle, close


def zookeeper(hosts: str) -> tuple[Cycle, Callable[[], None]]:
    """Ours on a ZooKeeper ensemble (here one standalone member)."""
    from celery_singleton_beat.connections.zookeeper import ZooKeeper
    from celery_singleton_beat.locks.zookeeper import ZooKeeperLock
    from celery_singleton_beat.settings.zookeeper import zookeeper_settings

    lock = ZooKeeperLock(ZooKeeper(zookeeper_settings(hosts), "/bench", wait=5.0))
    lock.owned = True

    def cycle() -> None:
        lease = lock.acquire("bench", ttl=10.0)
        if lease is None:
            raise Failed("ours on ZooKeeper: acquire refused")
        if not lock.release(lease):
            raise Failed("ours on ZooKeeper: release refused")

    return cycle, lock.close


POSTGRESQL = "postgresql+psycopg://postgres@127.0.0.1:5432"


def database_lock() -> tuple[Cycle, Callable[[], None]]:
    """The SQLAlchemy lock on PostgreSQL, in a database made for the run and dropped after."""
    import sqlalchemy as sa

    from celery_singleton_beat.connections.sqlalchemy import metadata
    from celery_singleton_beat.locks.sqlalchemy import SqlAlchemyLock

    name = f"bench_locks_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{POSTGRESQL}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    engine = sa.create_engine(f"{POSTGRESQL}/{name}")
    metadata.create_all(engine)
    lock = SqlAlchemyLock(engine)

    def cycle() -> None:
        lease = lock.acquire("bench", ttl=10.0)
        if lease is None:
            raise Failed("SqlAlchemyLock: acquire refused")
        if not lock.release(lease):
            raise Failed("SqlAlchemyLock: release refused")

    def close() -> None:
        lock.close()
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()

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
    parser.add_argument("--cycles", type=int, default=2000, help="cycles per row")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    with (
        redis_servers(5) as servers,
        sentinel_group() as group,
        redis_cluster_servers() as cluster,
        zookeeper_server() as member,
    ):
        urls = [s.url for s in servers]
        primary = group.primary().url
        sentinel = {"transport_options": group.transport_options}
        rows = {
            "ours, 1 master": ours(urls[:1]),
            "ours, 3 masters": ours(urls[:3]),
            "ours, 5 masters": ours(urls),
            "ours, 3, release posted": ours(urls[:3], posted=True),
            "floor: raw sockets, 3": floor(urls[:3]),
            "redis-py Lock, 1 node": redis_py(urls[0]),
            "pottery Redlock, 3 masters": pottery(urls[:3]),
            "pottery Redlock, 5 masters": pottery(urls),
            "ours, primary, WAIT 1": ours([primary]),
            "ours, primary, no WAIT": ours([primary], min_replicas=0),
            "ours, Sentinel, WAIT 1": ours([group.url], **sentinel),
            "redis-py Lock, the primary": redis_py(primary),
            "ours, Redis Cluster": ours([cluster.url]),
            "ours, cluster, no WAIT": ours([cluster.url], min_replicas=0),
            "ours, cluster, release posted": ours([cluster.url], posted=True),
            "redis-py Lock, Redis Cluster": redis_py_cluster(cluster.url),
            "ours, ZooKeeper, 1 member": zookeeper(member.name),
            "SqlAlchemyLock, PostgreSQL": database_lock(),
        }
        samples: dict[str, list[float]] = {name: [] for name in rows}
        rounds: dict[str, list[float]] = {name: [] for name in rows}
        try:
            for _ in range(args.rounds):
                for name, (cycle, _close) in rows.items():
                    taken = measure(cycle, args.cycles // args.rounds or 1)
                    samples[name] += taken
                    rounds[name].append(statistics.median(taken))
        except Failed as exc:
            raise SystemExit(f"{exc}; no figures") from None
        finally:
            for _cycle, close in rows.values():
                close()
    report(samples, rounds)


def report(samples: dict[str, list[float]], rounds: dict[str, list[float]]) -> None:
    print(f"acquire+release cycles, uncontended, {sum(map(len, samples.values()))} in all, "
          f"{len(next(iter(rounds.values())))} interleaved rounds")  # fmt: skip
    print(f"{'lock':<28} {'cycles':>7} {'median µs':>10} {'rounds min-max':>15} {'p99 µs':>8} "
          f"{'ops/s':>7}")  # fmt: skip
    medians = {}
    for name, values in samples.items():
        values.sort()
        medians[name] = statistics.median(values)
        low, high = min(rounds[name]) * 1e6, max(rounds[name]) * 1e6
        p99 = values[int(len(values) * 0.99) - 1]
        print(f"{name:<28} {len(values):>7} {medians[name] * 1e6:>10.0f} {low:>7.0f}-{high:<7.0f} "
              f"{p99 * 1e6:>8.0f} {1 / medians[name]:>7.0f}")  # fmt: skip
    ours3, single = medians["ours, 3 masters"], medians["redis-py Lock, 1 node"]
    posted, pottery3 = medians["ours, 3, release posted"], medians["pottery Redlock, 3 masters"]
    floor3 = medians["floor: raw sockets, 3"]
    print(f"ours(3) / redis-py Lock(1)                 = {ours3 / single:.2f}  (goal: <= 1.00)")
    print(f"ours(3), release posted / redis-py Lock(1) = {posted / single:.2f}  (goal: <= 1.00)")
    print(f"pottery(3) / ours(3)                       = {pottery3 / ours3:.1f}  (goal: >= 10)")
    print(f"ours(3) / floor(3)                         = {ours3 / floor3:.2f}")
    replicated = medians["redis-py Lock, the primary"]
    for name, goal in (
        ("ours, primary, WAIT 1", 1.3),
        ("ours, Sentinel, WAIT 1", 1.3),
        ("ours, primary, no WAIT", 1.0),
    ):
        ratio = medians[name] / replicated
        print(f"{name + ' / redis-py Lock(primary)':<48} = {ratio:.2f}  (goal: <= {goal:.2f})")
    on_cluster = medians["redis-py Lock, Redis Cluster"]
    for name, goal in (("ours, Redis Cluster", 1.3), ("ours, cluster, no WAIT", 1.0)):
        ratio = medians[name] / on_cluster
        print(f"{name + ' / redis-py Lock(cluster)':<48} = {ratio:.2f}  (goal: <= {goal:.2f})")
    for name in ("ours, ZooKeeper, 1 member", "SqlAlchemyLock, PostgreSQL"):
        print(f"{name + ' / ours(3)':<48} = {medians[name] / ours3:.2f}")


if __name__ == "__main__":
    main()

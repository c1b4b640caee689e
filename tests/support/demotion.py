"""A primary made a replica and back while clients stay connected, and what was sent to it
to write."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from celery_singleton_beat.testing import RedisServer, wait_for

#: Commands that write no key: handshakes, a new connection's check, reads, ``WAIT``,
#: what a primary sends its replica, and a Sentinel's reconfiguration (``MULTI``,
#: ``SLAVEOF``, ``EXEC``).
_NOT_WRITES = frozenset([
    "auth", "client", "command", "config", "exec", "exists", "get", "hello", "hget", "hgetall",
    "hmget", "info", "mget", "multi", "ping", "psync", "publish", "pttl", "replconf",
    "replicaof", "role", "scan", "script", "select", "slaveof", "subscribe", "sync", "time",
    "ttl", "wait", "zcard", "zrange", "zrangebyscore", "zscore",
])  # fmt: skip


def write_attempts(server: RedisServer) -> Counter[str]:
    """The commands that write sent to ``server`` since it started, run or refused
    (``READONLY``), by name: ``INFO commandstats`` calls, rejected and failed calls."""
    stats: dict[str, Any] = server.client().info("commandstats")
    counts: Counter[str] = Counter()
    for key, values in stats.items():
        name = key.removeprefix("cmdstat_")
        if name.split("|")[0] not in _NOT_WRITES:
            counts[name] = sum(
                int(values.get(n, 0)) for n in ("calls", "rejected_calls", "failed_calls")
            )
    return counts


def refused_writes(server: RedisServer) -> Counter[str]:
    """The commands ``server`` refused since it started (``READONLY``, in a script or not),
    by name: on a replica, every write sent to it."""
    stats: dict[str, Any] = server.client().info("commandstats")
    counts: Counter[str] = Counter()
    for key, values in stats.items():
        counts[key.removeprefix("cmdstat_")] = int(values.get("rejected_calls", 0)) + int(
            values.get("failed_calls", 0)
        )
    return counts


def demote(server: RedisServer, primary: RedisServer) -> None:
    """``REPLICAOF`` ``primary`` on ``server``, returned once it has ``primary``'s data:
    its clients stay connected and get ``READONLY`` for each write."""
    primary.client().config_set("repl-diskless-sync-delay", 0)
    server.client().execute_command("REPLICAOF", "127.0.0.1", primary.port)
    wait_for(lambda: _info(server).get("master_link_status") == "up", 10, "replica in sync")


def promote(server: RedisServer) -> float:
    """``REPLICAOF NO ONE``: the primary again; returns when (epoch seconds)."""
    server.client().execute_command("REPLICAOF", "NO", "ONE")
    return time.time()


def _info(server: RedisServer) -> dict[str, Any]:
    return dict(server.client().info("replication"))

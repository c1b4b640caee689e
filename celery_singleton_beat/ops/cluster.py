"""The cluster as operators see it: the Redis masters' state, the locks held on them, the
entries of every schedule source, schedules in words.

The replicas and the entries' progress are the slot store's, read through its contract
(:meth:`~celery_singleton_beat.stores.base.SlotStore.replicas`, ``entry_counts``).
Everything here only reads (except :func:`force_release`), with ordinary redis-py clients
(``RedisCluster`` for a Redis Cluster) and short timeouts, so that a status command never
waits long on a dead master.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import redis
from celery.beat import ScheduleEntry
from celery.schedules import crontab
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from celery_singleton_beat._compat import cron_fields
from celery_singleton_beat.connections.primary import client_for
from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.core.schema import Keys, lock_kind
from celery_singleton_beat.core.slots import BoundedSlots, CronSlots, slot_label, slots_for
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.settings.config import Config, TaskConfig
from celery_singleton_beat.settings.urls import MasterURL, without_cluster_flag
from celery_singleton_beat.sources import MergedSource, load_source
from celery_singleton_beat.sources.schedule_document import RUN_NOW

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

HEALTHY, DEGRADED, NO_QUORUM = 0, 1, 2


@dataclasses.dataclass
class MasterState:
    name: str
    url: str
    reachable: bool
    latency_ms: float | None = None
    version: str | None = None
    error: str | None = None
    run_id: str | None = None


Client = redis.Redis | RedisCluster
"""A master's client, or a Redis Cluster's (which routes each key to its shard)."""


def _client(node: MasterURL, timeout: float) -> Client:
    """A client for ``node`` (on a Sentinel member's primary now); a cluster's connects (to
    read its slot map) at once."""
    if node.cluster:  # TLS as the settings give it (singleton_beat_redis_use_ssl) too
        tls = {k: v for k, v in node.options.items() if k == "connection_class" or "ssl" in k}
        return RedisCluster.from_url(
            without_cluster_flag(node.url), socket_timeout=timeout,
            socket_connect_timeout=timeout, require_full_coverage=False, **tls,
        )  # fmt: skip
    client: redis.Redis = client_for(node, timeout)
    return client


def keys_of(config: Config | TaskConfig) -> Keys:
    """The key names of ``config``'s store: hash-tagged on a Redis Cluster."""
    clustered = any(node.cluster for node in config.members())
    return Keys(config.key_prefix, hash_tags=clustered)


def masters(
    config: Config | TaskConfig, timeout: float = 0.5
) -> list[tuple[MasterState, Client | None]]:
    """Each master (or cluster) of ``config`` with its reachability, PING latency and Redis
    version, and a client on it (for more questions; the caller closes it), None for a
    cluster whose slot map could not be read."""
    return probe(config.members() if config.redis_urls else [], timeout)


def master_states(members: Iterable[MasterURL], timeout: float = 0.5) -> list[MasterState]:
    """Each master's reachability, PING latency and Redis version (``members``: a store's
    :meth:`~celery_singleton_beat.stores.base.SlotStore.servers`)."""
    found = probe(members, timeout)
    for _state, client in found:
        if client is not None:
            client.close()
    return [state for state, _client in found]


def probe(members: Iterable[MasterURL], timeout: float) -> list[tuple[MasterState, Client | None]]:
    """Each member with a client on it (on a Sentinel member's primary now)."""
    found: list[tuple[MasterState, Client | None]] = []
    for node in members:
        state = MasterState(node.name, node.safe_url, reachable=False)
        client = None
        try:
            client = _client(node, timeout)
            started = time.perf_counter()
            client.ping()
            state.latency_ms = round((time.perf_counter() - started) * 1000, 2)
            server = client.info("server")
            state.version = str(server.get("redis_version"))
            state.run_id = server.get("run_id")
            state.reachable = True
        except (redis.RedisError, RedisClusterException) as exc:
            state.error = f"{type(exc).__name__}: {exc}"
        found.append((state, client))
    return found


def reachable(found: list[tuple[MasterState, Client | None]]) -> list[Client]:
    """The clients of the masters that answered."""
    return [client for state, client in found if state.reachable and client is not None]


def cluster_findings(name: str, client: Client) -> list[tuple[str, str]]:
    """What ``check`` says of a Redis Cluster: its primaries, and any without a replica."""
    if not isinstance(client, RedisCluster):
        return []
    shards = cluster_shards(client)
    findings = [
        ("OK", f"{name}: a Redis Cluster of {len(shards)} primaries; a primary lost is "
               f"replaced by its replica")
    ]  # fmt: skip
    alone = sorted(primary for primary, replicas in shards.items() if not replicas)
    if alone:
        findings.append(
            ("WARN", f"{name}: {', '.join(alone)} has no replica: losing it stops the cluster "
                     f"until it is back")
        )  # fmt: skip
    return findings


def cluster_shards(client: RedisCluster) -> dict[str, int]:
    """Each live primary serving slots (``host:port``) and how many live replicas it has,
    as the cluster's ``CLUSTER NODES`` tells (redis-py parses it)."""
    primaries: dict[str, str] = {}  # node id -> host:port
    replicas: list[str] = []  # their primaries' ids
    for address, info in client.cluster_nodes().items():
        flags = str(info["flags"]).split(",")
        if "fail" in flags:
            continue
        if "master" in flags and info["slots"]:
            primaries[str(info["node_id"])] = address.split("@")[0]
        elif "slave" in flags:
            replicas.append(str(info["master_id"]))
    return {name: replicas.count(node_id) for node_id, name in primaries.items()}


def server_time(client: Client) -> tuple[int, int]:
    """``TIME`` of a master (of one node of a cluster)."""
    if isinstance(client, RedisCluster):
        seconds, micros = client.time(target_nodes=RedisCluster.DEFAULT_NODE)
    else:
        seconds, micros = client.time()
    return int(seconds), int(micros)


def health(states: list[MasterState]) -> int:
    """0 every master answers, 1 a majority does, 2 no majority."""
    up = sum(s.reachable for s in states)
    if up == len(states):
        return HEALTHY
    return DEGRADED if up >= len(states) // 2 + 1 else NO_QUORUM


def scan(clients: list[Client], pattern: str) -> dict[str, list[Client]]:
    """Keys matching ``pattern`` on any reachable master (on every primary of a cluster),
    with the masters holding each."""
    keys: dict[str, list[Client]] = {}
    for client in clients:
        try:
            for key in client.scan_iter(match=pattern, count=500):
                keys.setdefault(_text(key), []).append(client)
        except redis.RedisError:
            continue
    return keys


def held_locks(config: Config | TaskConfig, clients: list[Client]) -> list[dict[str, Any]]:
    """Every lock held on a majority of masters: key, holder, remaining TTL, fence."""
    quorum = len(clients) // 2 + 1
    keys = keys_of(config)
    found = []
    for key, holders in sorted(scan(clients, keys.all_locks).items(), key=_by_lock_name(keys)):
        if len(holders) < quorum:
            continue
        name = keys.lock_name(key)
        token, ttl = _majority_value(holders, key)
        if token is None:
            continue
        found.append(
            {
                "key": name,
                "kind": lock_kind(name),
                "holder": token.partition("@")[2] or "?",
                "remaining": round(ttl / 1000, 3) if ttl > 0 else None,
                "fence": _fence(holders, keys.fence(name)),
            }
        )
    return found


def _by_lock_name(keys: Keys) -> Callable[[tuple[str, list[Client]]], str]:
    return lambda item: keys.lock_name(item[0])


def _majority_value(holders: list[Client], key: str) -> tuple[str | None, int]:
    values: dict[str, int] = {}
    ttl = -1
    for client in holders:
        try:
            with client.pipeline() as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, pttl = pipe.execute()
        except redis.RedisError:
            continue
        if raw is not None:
            values[_text(raw)] = values.get(_text(raw), 0) + 1
            ttl = max(ttl, int(pttl))
    if not values:
        return None, ttl
    return max(values, key=lambda v: values[v]), ttl


def _fence(holders: list[Client], key: str) -> int | None:
    fences = []
    for client in holders:
        try:
            value = client.get(key)
        except redis.RedisError:
            continue
        if value is not None:
            fences.append(int(value))
    return max(fences, default=None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def force_release(config: Config | TaskConfig, clients: list[Client], name: str) -> int:
    """Delete lock ``name`` on every reachable master; returns how many held it."""
    deleted = 0
    key = keys_of(config).lock(name)
    for client in clients:
        try:
            deleted += int(client.delete(key))
        except redis.RedisError:
            continue
    return deleted


def cron_expression(cron: crontab) -> str:
    """The five crontab fields as written (``*/15 9-17 * * mon-fri``)."""
    return " ".join(cron_fields(cron))


def in_words(schedule: Any) -> str:
    """A schedule in plain words (crontab through cron-descriptor, when installed)."""
    if isinstance(schedule, crontab):
        expression = cron_expression(schedule)
        try:
            from cron_descriptor import get_description  # noqa: PLC0415  (optional extra)
        except ImportError:
            return f"cron {expression}"
        return f"{get_description(expression)} ({expression})"
    every = getattr(schedule, "run_every", None)
    if every is not None:
        seconds = every.total_seconds()
        return "every second" if seconds == 1 else f"every {seconds:g} seconds"
    return str(schedule)


#: Functions ``(entry name) -> longest recorded runtime in seconds, or None``. The core
#: records no runtimes; a recorder that does (the Django app) adds one here.
RUNTIME_SOURCES: list[Callable[[str], float | None]] = []


def longest_runtime(entry: str) -> float | None:
    """The longest runtime any registered source recorded for ``entry``."""
    found = []
    for source in RUNTIME_SOURCES:
        try:
            value = source(entry)
        except Exception as exc:
            logger.warning("runtime source %r failed: %s", source, exc)
            continue
        if value is not None:
            found.append(float(value))
    return max(found, default=None)


def beat_entry(app: Celery, name: str) -> ScheduleEntry:
    """The ``beat_schedule`` entry ``name`` as beat builds it."""
    return ScheduleEntry(**dict(app.conf.beat_schedule[name], name=name, app=app))


def entry_specs(
    app: Celery, config: Config | None = None
) -> tuple[dict[str, Mapping[str, Any]], dict[str, str]]:
    """The entries the replicas schedule now, read through the schedule sources they read
    (``beat_schedule``, django-celery-beat's rows, runtime entries; paused ones marked as
    beat sees them, runs asked for now left out), and the name of each one's source."""
    specs, owners, _unread = entries_read(app, config)
    return specs, owners


def entries_read(
    app: Celery, config: Config | None = None
) -> tuple[dict[str, Mapping[str, Any]], dict[str, str], dict[str, str]]:
    """:func:`entry_specs`, and the sources that could not be read, each with why (their
    entries are missing; the pauses, when ``control`` is among them)."""
    config = config or Config.from_conf(app.conf)
    source = load_source(app, config.schedule_source, once=True)
    try:
        specs = {n: s for n, s in source.entries().items() if RUN_NOW not in n}
        owners = {
            name: (source.source_of(name) if isinstance(source, MergedSource) else None)
            or source.name
            for name in specs
        }
    finally:
        source.close()
    return specs, owners, source.unread


def plan_of(app: Celery, name: str, spec: Mapping[str, Any], grace: float) -> Plan:
    """Entry ``name`` as beat plans it: its slots (in its own zone) and its policy."""
    return Plan.build(Entry(**dict(spec, name=name, app=app)), app.timezone, grace)


def plan_in_words(plan: Plan, app_tz: dt.tzinfo) -> str:
    """An entry's schedule in plain words, followed by its zone when that is not the app's
    (a django-celery-beat crontab's own, or the entry's ``timezone`` setting), and its
    start and end time and jitter when it has them."""
    words = in_words(plan.entry.schedule)
    slots = plan.slots.slots if isinstance(plan.slots, BoundedSlots) else plan.slots
    zone = getattr(slots, "tz", None)
    if isinstance(slots, CronSlots) and _zone_name(zone) != _zone_name(app_tz):
        words = f"{words}, {_zone_name(zone)}"
    policy = plan.policy
    if policy.start_time is not None:
        words = f"{words}, from {slot_label(policy.start_ms or 0)}"
    if policy.end_time is not None:
        words = f"{words}, until {slot_label(policy.end_ms or 0)}"
    if policy.jitter:
        words = f"{words}, jitter {policy.jitter:g} s"
    return words


def _zone_name(zone: Any) -> str:
    return str(getattr(zone, "key", None) or zone)


def slot_times(
    schedule: Any, name: str, tz: dt.tzinfo, after: dt.datetime, until: dt.datetime | None = None
) -> Iterator[dt.datetime]:
    """The schedule's slots after ``after`` (up to ``until``), as beat computes them."""
    slots = slots_for(name, schedule, tz)
    t = int(after.timestamp() * 1000)
    stop = None if until is None else int(until.timestamp() * 1000)
    while (t := slots.next_after(t)) is not None and (stop is None or t <= stop):  # type: ignore[assignment]
        yield dt.datetime.fromtimestamp(t / 1000, tz)


def lock_ttl(app: Celery, task: Any) -> float | None:
    """The lock TTL a singleton task runs with (its own, else singleton_beat_task_ttl);
    None for a task that takes no lock or when the settings are invalid."""
    ttl = getattr(task, "singleton_ttl", None)
    if ttl is None:
        return None
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        return float(ttl)
    try:
        return TaskConfig.from_conf(app.conf).task_ttl
    except ConfigurationError:
        return None

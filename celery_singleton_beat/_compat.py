"""Every use of a private or version-dependent part of Celery, kombu and redis-py.

The rest of the package imports these names and never reaches into another library's
internals itself, so that a new release can break at most this module, and
``tests/compat/test_compat.py`` shows on each supported version (Celery >= 5.3,
kombu >= 5.3, redis-py >= 5) that every shim still does its job.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

from celery import Celery
from celery.beat import BeatLazyFunc
from celery.schedules import crontab
from redis import connection as redis_connection


def evaluate_entry_args(args: Sequence[Any] | None) -> list[Any]:
    """A beat entry's positional arguments with each ``BeatLazyFunc`` called, as beat does.

    Celery's own helper for this (``celery.beat._evaluate_entry_args``) is private.
    """
    return [a() if isinstance(a, BeatLazyFunc) else a for a in args or ()]


def evaluate_entry_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """A beat entry's keyword arguments with each ``BeatLazyFunc`` called, as beat does."""
    return {k: v() if isinstance(v, BeatLazyFunc) else v for k, v in (kwargs or {}).items()}


class CronFields(NamedTuple):
    """A crontab's five fields, as written, in crontab's order."""

    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str


def cron_fields(cron: crontab) -> CronFields:
    """The five fields of a crontab as written: minute, hour, day of month, month, weekday.

    Read from the pickling protocol (``__reduce__``, the same layout since Celery 4),
    not from the private ``_orig_*`` attributes.
    """
    minute, hour, day_of_week, day_of_month, month_of_year = cron.__reduce__()[1][:5]
    return CronFields(
        str(minute),
        str(hour),
        str(day_of_month),
        str(month_of_year),
        str(day_of_week),
    )


def created_apps() -> list[Celery]:
    """The Celery apps made in this process (Celery keeps them in a private weak set)."""
    from celery import _state  # noqa: PLC0415

    return list(_state._get_active_apps())


def current_app() -> Celery:
    """The current Celery app itself (not the proxy ``celery.current_app``)."""
    from celery import _state  # noqa: PLC0415

    return cast(Celery, _state.get_current_app())


def request_context(request: Any) -> Any:
    """A worker request's task context (``celery.app.task.Context``, with the message's
    callbacks and chain), from which Celery's own ``retry()`` builds the message it sends
    again. The worker's ``Request`` keeps it in the private ``_context`` (since Celery 4)."""
    return request._context


def producer_batch(producer: Any, max_size: int) -> contextlib.AbstractContextManager[Any]:
    """``producer.batch(max_size)`` where kombu has it (>= 5.7), else a no-op context.

    Inside a batch, messages reach the broker together at its end; without one, each
    message is published at once, which is as correct and only slower.
    """
    batch: Callable[..., Any] | None = getattr(producer, "batch", None)
    if batch is None:
        return contextlib.nullcontext()
    return cast(contextlib.AbstractContextManager[Any], batch(max_size=max_size))


def parse_redis_url(url: str) -> dict[str, Any]:
    """redis-py's URL parser (connection options from a ``redis://`` URL)."""
    parse: Callable[[str], dict[str, Any]] = redis_connection.parse_url
    return parse(url)


def connection_socket(connection: Any) -> socket.socket | None:
    """The socket of a redis-py ``Connection``, ``None`` while it is not connected.

    redis-py keeps it in the private ``_sock``; polling several connections at once
    (one ``poll()`` over every master) needs it.
    """
    return cast("socket.socket | None", getattr(connection, "_sock", None))


def redis_error(text: str) -> Exception:
    """The exception redis-py makes of an error reply (``NOSCRIPT ...`` -> ``NoScriptError``).

    Its parsers keep the table of error prefixes in the private ``BaseParser``; the masters'
    replies are read without redis-py's parser (see :mod:`celery_singleton_beat.connections.resp`)
    and must still fail with the same exception classes and texts.
    """
    parse: Callable[[str], Exception] = _error_parser().parse_error
    return parse(text)


def _error_parser() -> Any:
    """redis-py's parser class with the fullest table of error prefixes: up to redis-py 5
    the cluster's (``MOVED``, ``ASK``, ``CLUSTERDOWN``, ``TRYAGAIN``, ``CROSSSLOT``,
    ``MASTERDOWN``) are only in ``redis.cluster.ClusterParser``; later in ``BaseParser``."""
    try:
        from redis.cluster import ClusterParser  # type: ignore[attr-defined]  # noqa: PLC0415

        return ClusterParser  # pragma: no cover  (redis-py < 6)
    except ImportError:
        from redis._parsers.base import BaseParser  # noqa: PLC0415

        return BaseParser


def cluster_nodes_manager(host: str, port: int, options: dict[str, Any]) -> Any:
    """redis-py's ``NodesManager`` of the Redis Cluster that ``host:port`` belongs to: the
    part of ``RedisCluster`` that reads the slot map (``CLUSTER SLOTS``), made at once.

    ``options`` are a connection pool's (those redis-py reads from a URL), as
    ``RedisCluster.from_url`` gives them (``from_url=True``); the whole ``RedisCluster``
    would also fetch the server's command table, ten times the time.
    """
    from redis.cluster import ClusterNode, NodesManager  # noqa: PLC0415

    seed = ClusterNode(host, port)  # type: ignore[no-untyped-call]
    return NodesManager([seed], from_url=True, require_full_coverage=False, **options)


def cluster_slot_primaries(nodes_manager: Any, slots: int) -> list[tuple[str, int] | None]:
    """Each hash slot's primary ``(host, port)`` (None: no node serves it) in the slot map
    a ``NodesManager`` read last (its ``slots_cache``: slot -> nodes, the primary first,
    the same since redis-py 4.1)."""
    cache: dict[int, list[Any]] = nodes_manager.slots_cache
    known: dict[str, tuple[str, int]] = {}
    primaries: list[tuple[str, int] | None] = []
    for slot in range(slots):
        nodes = cache.get(slot)
        if not nodes:
            primaries.append(None)
            continue
        address = known.get(nodes[0].name)
        if address is None:
            address = known[nodes[0].name] = (str(nodes[0].host), int(nodes[0].port))
        primaries.append(address)
    return primaries


def quiet_handshake() -> dict[str, Any]:
    """Connection options for a connect with no handshake round trip.

    RESP2 (no ``HELLO``) and no ``CLIENT SETINFO``: a new connection to a master that
    accepts but does not answer must not stall the writes to the other masters.
    redis-py >= 7.1 names the library through ``driver_info``, older ones through
    ``lib_name``/``lib_version``.
    """
    try:
        import redis.driver_info  # noqa: F401, PLC0415  (redis-py >= 7.1)
    except ImportError:
        return {"lib_name": None, "lib_version": None, "protocol": 2}
    return {"driver_info": None, "protocol": 2}


def pool_connections(pool: Any) -> list[Any]:
    """Every connection a redis-py ``ConnectionPool`` holds, idle or in use (private lists;
    beat cuts its broker connection through them when a publish hangs)."""
    if pool is None:
        return []
    return [
        *getattr(pool, "_available_connections", []),
        *getattr(pool, "_in_use_connections", []),
    ]


def broker_pools(producer: Any) -> list[Any]:
    """The redis-py connection pools behind a kombu Redis channel: ``pool`` (publishing,
    queue declarations) and ``async_pool`` (``channel.client``); none for other
    transports."""
    channel = getattr(producer, "channel", None)
    if channel is None or not hasattr(channel, "conn_or_acquire"):
        return []
    return [channel.pool, channel.async_pool]


def cluster_node_of(client: Any, key: str) -> Any:
    """The node of a Redis Cluster that serves ``key`` (redis-py's ``get_node_from_key``,
    public but untyped)."""
    return client.get_node_from_key(key)

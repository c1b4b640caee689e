"""One member's primary: where it is, whether a server is it, and which writes count on it.

A member of the Redis settings is one server, reached at its URL's address (a standalone
master, or a cloud endpoint whose server changes on failover), or a Sentinel-managed
primary. Either way the address comes from redis-py: the URL's host resolved again on
each connect, or :class:`redis.sentinel.SentinelManagedConnection`, which asks the
Sentinels on each connect (:func:`connection_class`). Nothing here finds a primary itself.

What a new connection reached is checked once, from the reply to ``INFO replication``
sent with its first batch (:meth:`Replication.check`): a replica is refused, and so is a
primary with another replication history than the one this member wrote to, when that
one kept replicas (a primary that restarted empty at the old address: what is written
there would be rolled back once it is made a replica again). The primary's replicas are
counted, per primary (its replication id), and never lowered for it: with
``min_replicas`` unset, a write counts on this member only once that many replicas
acknowledged it (``WAIT``, sent with the write; :meth:`Replication.judge`)::

    primary P (1 replica R)  ── writes wait for 1 ── P killed, R promoted
    R (0 replicas, continues P's history)  ── writes wait for 0: published again
    P back empty at its old address  ── another history: refused (never written to)

A write that was not acknowledged may be lost on a failover, so it does not count: the
caller treats this member's answer as missing, as if it had not answered.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from celery_singleton_beat.settings.urls import MasterURL, SentinelSpec

logger = logging.getLogger(__name__)


class NotPrimary(RedisConnectionError):
    """The server a connection reached is not the member's primary (refused at connect)."""


class NotReplicated(RedisError):
    """A write was not acknowledged by as many replicas as the member requires."""


def connection_class(
    master: MasterURL, options: dict[str, Any], timeout: float
) -> tuple[type, object]:
    """redis-py's connection class for ``master``, with ``options`` completed for it, and
    an object the caller keeps as long as it makes connections (None if none).

    For a Sentinel-managed primary: ``SentinelManagedConnection`` (its TLS variant with
    ``ssl``), which asks the Sentinels for the primary's address on each connect, through
    a ``SentinelConnectionPool``'s proxy (the object to keep: the proxy holds the pool by
    a weak reference); the Sentinels are asked with the node timeout unless
    ``sentinel_kwargs`` says otherwise.
    """
    found: type = options.pop("connection_class", None) or _plain()
    spec = master.sentinel
    if spec is None:
        return found, None
    from redis.sentinel import (  # noqa: PLC0415  (only Sentinel members need it)
        SentinelConnectionPool,
        SentinelManagedConnection,
        SentinelManagedSSLConnection,
    )

    tls = bool(options.pop("ssl", False))
    managed = SentinelManagedSSLConnection if tls else SentinelManagedConnection
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        spec.master_name, sentinels(spec, timeout), connection_class=managed
    )
    options["connection_pool"] = pool.proxy
    return managed, pool


def sentinels(spec: SentinelSpec, timeout: float) -> Any:
    """redis-py's ``Sentinel`` for ``spec``, without retries (the next Sentinel is asked)."""
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415
    from redis.sentinel import Sentinel  # noqa: PLC0415

    kwargs = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        **spec.sentinel_kwargs,
    }
    return Sentinel(
        list(spec.sentinels), min_other_sentinels=spec.min_other_sentinels, sentinel_kwargs=kwargs
    )


def _plain() -> type:
    from redis.connection import Connection  # noqa: PLC0415

    return Connection


def client_for(master: MasterURL, timeout: float) -> Any:
    """A plain redis-py client on ``master``'s primary (for operators' commands)."""
    import redis  # noqa: PLC0415

    if master.sentinel is None:  # the URL's options, and TLS's (singleton_beat_redis_use_ssl)
        pool = redis.ConnectionPool(
            **master.options, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        return redis.Redis(connection_pool=pool)
    options = {k: v for k, v in master.options.items() if k != "ssl"}
    if master.options.get("ssl"):
        from redis.sentinel import SentinelManagedSSLConnection  # noqa: PLC0415

        options["connection_class"] = SentinelManagedSSLConnection
    return sentinels(master.sentinel, timeout).master_for(
        master.sentinel.master_name, socket_timeout=timeout, socket_connect_timeout=timeout,
        **options,
    )  # fmt: skip


class Replication:
    """What one member knows of its primary: which it is, its history, the replicas a
    write must reach there before it counts, and whether the last writes did.

    ``min_replicas`` fixes that number; None learns it per primary: the replicas the
    primary reports when connected to, the highest seen for it, never lowered.
    """

    def __init__(self, name: str, min_replicas: int | None, timeout: float) -> None:
        self.name = name
        self.fixed = min_replicas
        self.need: int | None = min_replicas
        """Replicas a write must reach on the current primary (None: not connected yet)."""
        self.timeout_ms = round(timeout * 1000)
        self.wait_ms = max(1, int(timeout * 500))
        """``WAIT``'s own timeout: half the node timeout, so that its answer can come in
        time (Redis ends a ``WAIT`` on its timeout at its own ``hz``: 100 ms at the
        default 10; a reply that did not come in time is judged too)."""
        self._learned: dict[str, int] = {}
        self._history: set[str] = set()
        self._current: str | None = None
        self._acknowledged: bool | None = None
        self.unsure = True
        """Whether the primary should be asked before a write: no connection reached it
        yet, or the last durable round trip failed on it (it may have moved)."""
        self._mutex = threading.Lock()

    def check(self, reply: Any, where: str) -> bool:
        """Check a new connection's server from its ``INFO replication`` ``reply``: raises
        :class:`NotPrimary` when it is not the primary. True when it is another primary
        than the last one (the member's idle connections to the old one are stale)."""
        if isinstance(reply, Exception):
            raise NotPrimary(
                f"Redis member {self.name}: {where} did not answer INFO replication ({reply}); "
                f"it is needed to tell the primary (allow it for this user)"
            )
        info = _info(reply)
        if info.get("role") != "master":
            raise NotPrimary(
                f"Redis member {self.name}: {where} is a {info.get('role', 'server')}, not "
                f"the primary; nothing is written there"
            )
        replid, before = info.get("master_replid", ""), info.get("master_replid2", "")
        replicas = int(info.get("connected_slaves", 0))
        with self._mutex:
            if (
                self._current != replid
                and self._guarded()
                and replid not in self._history
                and before not in self._history
            ):
                raise NotPrimary(
                    f"Redis member {self.name}: {where} is a primary with another "
                    f"replication history than the one written to (it restarted empty, "
                    f"or is another server); its data would be rolled back when it is "
                    f"made a replica, so nothing is written there"
                )
            self._history.add(replid)
            self._learned[replid] = max(self._learned.get(replid, 0), replicas)
            changed = self._current not in (None, replid)
            fresh = self._current != replid
            self._current = replid
            self.need = self.fixed if self.fixed is not None else self._learned[replid]
        if fresh:
            # a new primary is news; a first one is said at start, quietly when there is
            # nothing to wait for (a standalone master: three of them on every start)
            logger.log(
                logging.WARNING if changed else logging.INFO if self.need else logging.DEBUG,
                "Redis member %s: primary %s, %d replica(s); %s",
                self.name, where, replicas,
                f"a write counts once {self.need} acknowledged it" if self.need
                else "a write counts without waiting for a replica",
            )  # fmt: skip
        return changed

    def _guarded(self) -> bool:
        """Whether the current primary's writes had to have copies on replicas."""
        return self._current is not None and (self.need or 0) > 0

    def judge(self, acknowledged: int | None) -> NotReplicated | None:
        """Whether a batch of writes counts, ``acknowledged`` by that many replicas (0 when
        no ``WAIT`` was sent, None when its answer did not come within the node timeout);
        a log line when that changes."""
        need = self.need or 0
        counts = acknowledged is not None and acknowledged >= need
        before, self._acknowledged = self._acknowledged, counts
        if counts:
            if before is False:
                logger.warning(
                    "Redis member %s: %d of %d replicas acknowledged; its writes count again",
                    self.name, acknowledged, need,
                )  # fmt: skip
            return None
        if acknowledged is None:  # WAIT still waiting: fewer than it asked for acknowledged
            shown, within = ("0" if need == 1 else f"fewer than {need}"), self.timeout_ms
        else:
            shown, within = str(acknowledged), self.wait_ms
        text = f"{shown} of {need} replicas acknowledged within {within} ms"
        if before is not False:
            logger.warning(
                "Redis member %s: %s; its writes do not count (nothing is published on "
                "them) until they are", self.name, text,
            )  # fmt: skip
        return NotReplicated(text)


def _info(reply: Any) -> dict[str, str]:
    """An ``INFO`` reply as a dict."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

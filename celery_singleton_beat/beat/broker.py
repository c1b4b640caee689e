"""Beat's broker connection: bounded, made before the first claim, cut when a publish hangs.

Before claiming anything, beat connects and declares the queues its entries are routed
to (kombu declares a queue at its first publish on a connection: on Redis, two more round
trips). A publish that passes the publish timeout has its sockets shut down from the
claim keeper's thread, so it fails at once instead of completing later. Neither kombu
(``retry=False`` on beat's publishes) nor redis-py (no ``retry`` on kombu's pools, which
kombu also requires for its publish batches) retries a publish on its own.

These reach below kombu's public API (a Redis channel's client and connection pool, an
AMQP connection's transport socket) and do nothing where a transport has no such parts.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from celery_singleton_beat._compat import broker_pools, connection_socket, pool_connections

logger = logging.getLogger(__name__)


def warm(producer: Any, queues: Iterable[Any]) -> None:
    """Open the broker connection and declare ``queues`` now, so that a publish costs one
    round trip (a fresh Redis connection costs several: handshake, client info)."""
    for pool in broker_pools(producer):
        client = redis.Redis(connection_pool=pool)
        try:
            client.ping()
        except (OSError, redis.ConnectionError):
            client.ping()  # a connection cut before: the second one is new
    for queue in queues:
        producer.maybe_declare(queue)


def cut(producer: Any) -> int:
    """Shut the sockets of the producer's broker connection down, from another thread:
    a publish blocked on them fails at once. Returns how many sockets were shut."""
    shut = 0
    for sock in _sockets(producer):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
            shut += 1
    return shut


def _sockets(producer: Any) -> Iterator[socket.socket]:
    for pool in broker_pools(producer):
        for connection in pool_connections(pool):
            sock = connection_socket(connection)
            if sock is not None:
                yield sock
    amqp = getattr(getattr(producer, "connection", None), "connection", None)
    sock = getattr(getattr(amqp, "transport", None), "sock", None)
    if isinstance(sock, socket.socket):
        yield sock


def publish_timeouts(conf: Any, timeout: float) -> dict[str, float]:
    """Transport options that bound one broker operation to ``timeout`` seconds, for the
    transports that block on sockets (Redis, AMQP); what ``broker_transport_options``
    sets already is kept."""
    url = str(conf.broker_write_url or conf.broker_url or "")
    scheme = (conf.broker_transport or url.partition("://")[0]).lower()
    if scheme in ("redis", "rediss", "sentinel"):
        wanted = {"socket_timeout": timeout}
    elif scheme in ("amqp", "amqps", "pyamqp"):
        wanted = {"read_timeout": timeout, "write_timeout": timeout}
    else:
        return {}
    given = conf.broker_transport_options or {}
    return {key: value for key, value in wanted.items() if given.get(key) is None}

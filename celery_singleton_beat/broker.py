"""Beat's broker connection: made before the first claim, and cut when a publish hangs.

Both reach below kombu's public API (a Redis channel's client and connection pool, an
AMQP connection's transport socket) and degrade to doing nothing when a transport does
not have what they look for.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


def warm(producer: Any) -> None:
    """Open the broker connection now, so that the first publish costs one round trip
    (a fresh Redis connection costs several: handshake, database selection)."""
    channel = producer.channel
    client = getattr(channel, "client", None)
    if client is None or not hasattr(client, "ping"):
        return
    try:
        client.ping()
    except OSError:
        client.ping()  # a connection cut before: the second one is new


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
    channel = getattr(producer, "channel", None)
    client = getattr(channel, "client", None)
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        connections = [
            *getattr(pool, "_available_connections", []),
            *getattr(pool, "_in_use_connections", []),
        ]
        for connection in connections:
            sock = getattr(connection, "_sock", None)
            if isinstance(sock, socket.socket):
                yield sock
    amqp = getattr(getattr(producer, "connection", None), "connection", None)
    sock = getattr(getattr(amqp, "transport", None), "sock", None)
    if isinstance(sock, socket.socket):
        yield sock

"""Independent Redis masters, spoken to in one round trip.

:class:`Masters` writes a batch of commands to every master's socket first and only then
reads the replies, all against one deadline. A round trip over N masters therefore costs
about as much as a round trip to the slowest answering one, never N of them, and a master
that does not answer costs at most the per-node timeout (counted from the moment its
command was written).
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from celery_singleton_beat._compat import connection_socket, parse_redis_url, quiet_handshake
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.urls import safe_url, safe_value

Command = Sequence[Any]

_URL_FORM = (
    "a redis:// or rediss:// URL such as redis://[user:password@]host:6379/0, with a "
    "password holding / # ? @ or % percent-encoded (urllib.parse.quote(password, safe=''))"
)


def _parse(url: str) -> dict[str, Any] | None:
    """redis-py's reading of ``url``, or None when it cannot be read as written.

    A password with an unencoded ``/``, ``#`` or ``?`` ends the host part early: the URL
    would point at another host (or fail with an error quoting the password), so it is
    refused here, before anything echoes it.
    """
    try:
        parts = urlsplit(url)
        if "@" in url[len(parts.scheme) + 3 + len(parts.netloc) :]:
            return None
        return parse_redis_url(url)
    except (ValueError, TypeError):
        return None


_HANDSHAKE = quiet_handshake()


class Node:
    """One Redis master: its address and a small pool of dedicated connections.

    Connections are made with redis-py's retries switched off and the socket timeouts set
    to the per-node timeout: a failure is reported at once so that the majority decides,
    instead of being retried for seconds.
    """

    def __init__(self, url: str, timeout: float) -> None:
        options = _parse(url)
        if options is None:
            raise ConfigurationError("redis URL", safe_url(url), _URL_FORM)
        if "path" in options:
            self.name = options["path"]
        else:
            self.name = f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
        self.url = url
        self.safe_url = safe_url(url)
        self._connection_class = options.pop("connection_class", Connection)
        self._options = {
            **options,
            **_HANDSHAKE,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        self._idle: list[Any] = []
        self._mutex = threading.Lock()

    def checkout(self) -> Any:
        """A connection for one round trip: an idle one still open, else a new one.

        Replies left unread by a :meth:`Masters.post` are read (and dropped) first. An
        idle connection whose master restarted has its end-of-file waiting; it is
        dropped here rather than failing this round trip.
        """
        while True:
            with self._mutex:
                if not self._idle:
                    break
                connection = self._idle.pop()
            if _drain(connection) and not _readable([connection], 0):
                return connection
            connection.disconnect()
        connection = self._connection_class(**self._options)
        connection.scripts_loaded = 0
        connection.pending_preamble = 0
        connection.unread = 0
        return connection

    def checkin(self, connection: Any) -> None:
        """Return a connection whose replies were all read."""
        with self._mutex:
            self._idle.append(connection)

    def close(self) -> None:
        with self._mutex:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()

    def __repr__(self) -> str:
        return f"<Node {self.safe_url}>"


def parse_masters(urls: Iterable[str] | str, timeout: float) -> list[Node]:
    """Build the nodes for ``urls``, refusing an empty list, bad URLs and duplicates."""
    if isinstance(urls, str):
        urls = [u.strip() for u in urls.split(",") if u.strip()]
    urls = list(urls)
    if not urls:
        raise ConfigurationError("urls", urls, f"give at least one master, as {_URL_FORM}")
    nodes = []
    for url in urls:
        if not isinstance(url, str) or url.partition("://")[0] not in ("redis", "rediss", "unix"):
            raise ConfigurationError("redis URL", safe_value(url), _URL_FORM)
        nodes.append(Node(url, timeout))
    seen: dict[str, str] = {}
    for node in nodes:
        if node.name in seen:
            raise ConfigurationError(
                "urls",
                [n.safe_url for n in nodes],
                f"each master must be a distinct host:port, and {node.name} is given twice; "
                f"Redlock needs independent masters, so a repeated one would count twice",
            )
        seen[node.name] = node.safe_url
    return nodes


class Masters:
    """A fixed set of independent Redis masters and their majority."""

    def __init__(self, nodes: Sequence[Node], timeout: float) -> None:
        self.nodes = list(nodes)
        self.timeout = timeout
        self.quorum = len(self.nodes) // 2 + 1
        self._scripts: list[bytes] = []

    def script(self, body: str) -> str:
        """Register a Lua script; returns the SHA1 to call it by with ``EVALSHA``.

        Each connection loads the registered scripts with its first command (pipelined,
        no extra round trip), so ``EVALSHA`` works on masters that restarted empty.
        """
        data = body.encode()
        if data not in self._scripts:
            self._scripts.append(data)
        return hashlib.sha1(data).hexdigest()

    @classmethod
    def from_urls(cls, urls: Iterable[str] | str, timeout: float) -> Masters:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigurationError(
                "node_timeout", timeout, "a positive number of seconds, such as 0.05"
            )
        return cls(parse_masters(urls, float(timeout)), float(timeout))

    def broadcast(self, commands: Sequence[Command]) -> list[list[Any] | Exception]:
        """Send the same ``commands`` (pipelined) to every master in one round trip.

        Returns one entry per node, in order: the list of replies, or the exception that
        node gave (connection refused, timeout, a ``ResponseError`` from a script).
        """
        return self.scatter([commands] * len(self.nodes))

    def post(self, commands: Sequence[Command]) -> None:
        """Send ``commands`` to every master without waiting for the replies.

        For writes whose outcome the caller does not need (releasing a lock at the end of
        a task): it saves the wait of a round trip. The replies are read before each
        connection's next command; a master that cannot be written to is skipped.
        """
        data = pack(commands)
        for node in self.nodes:
            connection = None
            try:
                connection = node.checkout()
                connection.send_packed_command([*self._preamble(connection), data])
            except (RedisError, OSError):
                _discard(connection)
                continue
            connection.unread = connection.pending_preamble + len(commands)
            connection.pending_preamble = 0
            node.checkin(connection)

    def scatter(self, batches: Sequence[Sequence[Command]]) -> list[list[Any] | Exception]:
        """Like :meth:`broadcast` with one batch per node; an empty batch skips its node."""
        packed: dict[int, bytes] = {}
        for batch in batches:
            if batch and id(batch) not in packed:
                packed[id(batch)] = pack(batch)
        sent: dict[int, Any] = {}
        deadlines: dict[int, float] = {}
        results: list[list[Any] | Exception] = [[] for _ in self.nodes]
        for index, (node, batch) in enumerate(zip(self.nodes, batches, strict=True)):
            if not batch:
                continue
            connection = None
            try:
                connection = node.checkout()
                preamble = self._preamble(connection)
                connection.send_packed_command([*preamble, packed[id(batch)]])
            except (RedisError, OSError) as exc:
                _discard(connection)
                results[index] = _as_error(exc)
                continue
            sent[index] = connection
            deadlines[index] = time.monotonic() + self.timeout
        while sent:
            ready = _readable(list(sent.values()), min(deadlines.values()) - time.monotonic())
            now = time.monotonic()
            for index, connection in list(sent.items()):
                if connection in ready:
                    results[index] = _read_replies(
                        self.nodes[index], connection, len(batches[index])
                    )
                elif deadlines[index] <= now:
                    _discard(connection)
                    results[index] = RedisTimeoutError(f"no reply within {self.timeout}s")
                else:
                    continue
                del sent[index], deadlines[index]
        return results

    def _preamble(self, connection: Any) -> list[bytes]:
        """``SCRIPT LOAD`` for the scripts this connection has not loaded yet."""
        loaded = connection.scripts_loaded
        if loaded == len(self._scripts):
            return []
        connection.scripts_loaded = len(self._scripts)
        connection.pending_preamble = len(self._scripts) - loaded
        return [pack([("SCRIPT", "LOAD", body) for body in self._scripts[loaded:]])]

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return repr(arg).encode()
    raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")


def pack(commands: Sequence[Command]) -> bytes:
    """RESP encoding of a pipeline of commands, made once and sent to every master."""
    out: list[bytes] = []
    append = out.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)
            data = arg.encode() if kind is str else b"%d" % arg if kind is int else _encode(arg)
            append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _readable(connections: list[Any], timeout: float) -> list[Any]:
    """The connections with bytes (or end-of-file) waiting, after at most ``timeout`` s.

    One ``poll()`` for all of them; redis-py's own ``can_read`` would switch each socket's
    timeout back and forth around every read.
    """
    sockets = [(c, connection_socket(c)) for c in connections]
    by_fd = {sock.fileno(): c for c, sock in sockets if sock is not None}
    if len(by_fd) < len(connections):  # a socket closed under us reads as "ready": it fails fast
        return [c for c, sock in sockets if sock is None]
    buffered = [c for c, sock in sockets if isinstance(sock, ssl.SSLSocket) and sock.pending()]
    if buffered:  # TLS bytes already decrypted are invisible to poll()
        return buffered
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    events = poller.poll(max(0.0, timeout) * 1000)
    return [by_fd[fd] for fd, _ in events]


def _drain(connection: Any) -> bool:
    """Read and drop the replies a posted command left; False when the connection failed."""
    try:
        for _ in range(connection.unread):
            with contextlib.suppress(ResponseError):
                connection.read_response()
    except (RedisError, OSError):
        return False
    connection.unread = 0
    return True


def _read_replies(node: Node, connection: Any, count: int) -> list[Any] | Exception:
    """Read ``count`` replies (after any ``SCRIPT LOAD`` ones) from a readable connection."""
    preamble, connection.pending_preamble = connection.pending_preamble, 0
    replies: list[Any] = []
    failure: Exception | None = None
    try:
        for _ in range(preamble + count):
            try:
                replies.append(connection.read_response())
            except ResponseError as exc:
                failure = failure or exc
                replies.append(exc)
    except (RedisError, OSError) as exc:
        _discard(connection)
        return _as_error(exc)
    if failure is not None and str(failure).startswith("NOSCRIPT"):
        _discard(connection)  # the scripts were flushed: a new connection loads them again
    else:
        node.checkin(connection)
    return failure if failure is not None else replies[preamble:]


def _discard(connection: Any) -> None:
    if connection is not None:
        connection.disconnect()


def _as_error(exc: BaseException) -> Exception:
    return exc if isinstance(exc, Exception) else RedisError(str(exc))


def describe(error: Exception) -> str:
    """A short, password-free description of a node's error."""
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"

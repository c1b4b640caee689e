"""Independent Redis masters, spoken to in one round trip.

:class:`Masters` writes a batch of commands to every master's socket first and only then
reads the replies, all against one deadline. A round trip over N masters therefore costs
about as much as a round trip to the slowest answering one, never N of them, and a master
that does not answer costs at most the per-node timeout (counted from the moment its
command was written).
"""

from __future__ import annotations

import hashlib
import select
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from celery_singleton_beat._compat import (
    connection_socket,
    parse_redis_url,
    quiet_handshake,
    redis_error,
)
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

        An idle connection whose master restarted has its end-of-file waiting; it is
        dropped here rather than failing this round trip. Replies left unread by a
        :meth:`Masters.post` are read with the next round trip's.
        """
        return _checkout([self])[0]

    def _take_idle(self) -> Any:
        with self._mutex:
            return self._idle.pop() if self._idle else None

    def _new(self) -> Any:
        connection = self._connection_class(**self._options)
        connection.raw = None  # the socket, once connected (see _send)
        connection.scripts_loaded = 0
        connection.pending_preamble = 0
        connection.unread = 0
        connection.inbox = bytearray()
        connection.parsed = []
        connection.arrays = []  # arrays being parsed: (items so far, length)
        return connection

    def checkin(self, connection: Any) -> None:
        """Return a connection whose replies were all read (or will be, see ``unread``)."""
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
        a task): it saves the wait of a round trip. The replies are read with each
        connection's next round trip; a master that cannot be written to is skipped.
        """
        data = pack(commands)
        for node, connection in zip(self.nodes, _checkout(self.nodes), strict=True):
            try:
                _send(connection, self._preamble(connection), data)
            except (RedisError, OSError):
                _discard(connection)
                continue
            connection.unread += connection.pending_preamble + len(commands)
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
        used = [index for index, batch in enumerate(batches) if batch]
        connections = _checkout([self.nodes[index] for index in used])
        for index, connection in zip(used, connections, strict=True):
            try:
                _send(connection, self._preamble(connection), packed[id(batches[index])])
            except (RedisError, OSError) as exc:
                _discard(connection)
                results[index] = _as_error(exc)
                continue
            sent[index] = connection
            deadlines[index] = time.monotonic() + self.timeout
        while sent:
            ready = _readable(sent, min(deadlines.values()) - time.monotonic())
            polled = time.monotonic()
            progressed = []
            for index in ready:
                replies = _read_replies(self.nodes[index], sent[index], len(batches[index]))
                if replies is None:  # more to come
                    progressed.append(index)
                else:
                    results[index] = replies
                    del sent[index], deadlines[index]
            done = time.monotonic()
            for index in list(sent):
                if index in progressed:  # the timeout counts from the last bytes
                    deadlines[index] = done + self.timeout
                elif deadlines[index] <= polled:
                    _discard(sent[index])
                    results[index] = RedisTimeoutError(f"no reply within {self.timeout}s")
                    del sent[index], deadlines[index]
                else:  # time spent reading the others is not this master's
                    deadlines[index] += done - polled
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


def _send(connection: Any, preamble: list[bytes], data: bytes) -> None:
    """Write ``preamble`` and ``data`` to ``connection``, connecting it first if needed.

    The socket is non-blocking once connected: a write that fits the socket buffer (every
    lock command does) is one system call, where a socket with a timeout polls before
    each send and each receive.
    """
    sock = connection.raw
    if sock is None:
        connection.connect()  # redis-py's connect and handshake, with their errors
        sock = connection_socket(connection)
        if sock is None:  # pragma: no cover  (connect either sets a socket or raises)
            raise RedisConnectionError("not connected")
        sock.setblocking(False)
        connection.raw = sock
    if preamble:
        data = b"".join([*preamble, data])
    try:
        try:
            done = sock.send(data)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            done = 0
        if done < len(data):  # a full socket buffer: finish with the node timeout
            sock.settimeout(connection.socket_timeout)
            try:
                sock.sendall(data[done:])
            finally:
                sock.setblocking(False)
    except TimeoutError:
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        raise RedisConnectionError(
            f"Error {exc.errno} while writing to socket. {exc.strerror or exc}."
        ) from None


def _receive(connection: Any) -> bool:
    """Move the bytes waiting on ``connection`` into its inbox; False at end-of-file."""
    sock = connection.raw
    if sock is None:
        return False
    try:
        data = sock.recv(65536)
        while isinstance(sock, ssl.SSLSocket) and sock.pending():
            data += sock.recv(sock.pending())
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return True
    if not data:
        return False
    connection.inbox += data
    return True


def _still_open(connection: Any) -> bool:
    """Whether an idle connection can take a command: no end-of-file or garbage waiting.

    The replies of posted commands that already arrived are read and dropped; those still
    on their way are left for the next round trip to read first.
    """
    if connection.raw is None:
        return True  # never connected: it connects on first use
    try:
        if not _receive(connection):
            return False
        if connection.inbox and not _receive(connection):  # data, then end-of-file
            return False
        _parse_waiting(connection)
    except (RedisError, OSError):
        return False
    dropped = min(connection.unread, len(connection.parsed))
    del connection.parsed[:dropped]
    connection.unread -= dropped
    return not connection.parsed and (
        connection.unread > 0 or not (connection.inbox or connection.arrays)
    )


def _readable(sent: dict[int, Any], timeout: float) -> list[int]:
    """The indexes in ``sent`` whose connection has bytes (or end-of-file) waiting, after
    at most ``timeout`` s: one ``poll()`` for all of them."""
    poller = select.poll()
    by_fd: dict[int, int] = {}
    for index, connection in sent.items():
        sock = connection.raw
        if sock is None:  # a socket closed under us reads as "ready": it fails fast
            return [index]
        by_fd[sock.fileno()] = index
        poller.register(sock, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(max(0.0, timeout) * 1000)]


#: poll() flags of a connection its master closed or reset. POLLRDHUP (Linux only) is
#: raised even while replies are still waiting ahead of the end-of-file; without it each
#: idle connection is checked by reading (see _still_open).
_RDHUP: int = getattr(select, "POLLRDHUP", 0)
_HUNG_UP = _RDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL


def _checkout(nodes: Sequence[Node]) -> list[Any]:
    """A connection per node for one round trip: idle ones that are still open (checked
    together, with one ``poll()`` where the system reports a peer's hang-up), else new."""
    chosen: list[Any] = [None] * len(nodes)
    pending = list(range(len(nodes)))
    while pending:
        idle = {}
        for index in pending:
            connection = nodes[index]._take_idle()
            if connection is None:
                chosen[index] = nodes[index]._new()
            else:
                idle[index] = connection
        pending = []
        for index, is_open in _are_open(idle).items():
            if is_open:
                chosen[index] = idle[index]
            else:
                idle[index].disconnect()
                pending.append(index)
    return chosen


def _are_open(idle: dict[int, Any]) -> dict[int, bool]:
    """Which idle connections can take a command (see :func:`_still_open`)."""
    verdicts = {}
    polled: dict[int, int] = {}
    poller = select.poll()
    for index, connection in idle.items():
        sock = connection.raw
        if sock is None:
            verdicts[index] = True  # never connected: it connects on first use
        elif not _RDHUP or isinstance(sock, ssl.SSLSocket) or connection.inbox or connection.arrays:
            verdicts[index] = _still_open(connection)
        else:
            polled[sock.fileno()] = index
            poller.register(sock, select.POLLIN | _RDHUP)
    if polled:
        events = dict(poller.poll(0))
        for fd, index in polled.items():
            flags = events.get(fd, 0)
            if flags & _HUNG_UP:
                verdicts[index] = False
            elif flags and not idle[index].unread:  # bytes nobody asked for
                verdicts[index] = _still_open(idle[index])
            else:
                verdicts[index] = True
    return verdicts


def _read_replies(node: Node, connection: Any, count: int) -> list[Any] | Exception | None:
    """The ``count`` replies of the last batch, once the connection has them all (None
    before that); the replies of earlier posted commands and of ``SCRIPT LOAD`` come first
    and are dropped."""
    try:
        if not _receive(connection):
            raise RedisConnectionError("Connection closed by server.")
        _parse_waiting(connection)
    except (RedisError, OSError) as exc:
        _discard(connection)
        return _as_error(exc)
    skip = connection.unread + connection.pending_preamble
    if len(connection.parsed) < skip + count:
        return None
    replies = connection.parsed[skip : skip + count]
    mine = connection.parsed[connection.unread : skip + count]
    failure = next((r for r in mine if isinstance(r, ResponseError)), None)
    connection.parsed = connection.parsed[skip + count :]
    connection.unread = connection.pending_preamble = 0
    if connection.parsed or connection.inbox or connection.arrays:  # out of step
        _discard(connection)
    elif isinstance(failure, NoScriptError):
        _discard(connection)  # the scripts were flushed: a new connection loads them again
    else:
        node.checkin(connection)
    return failure if failure is not None else replies


def _parse_waiting(connection: Any) -> None:
    """Parse every complete reply in the connection's inbox onto its ``parsed`` list.

    RESP2, as the connections are made (see ``quiet_handshake``); values as redis-py's own
    parser gives them: ``bytes`` (``str`` with ``decode_responses``), ``int``, ``None``,
    lists, and error replies as the exception redis-py makes of them (not raised). The
    parse resumes where it stopped: an array arriving in many pieces (a batch of
    thousands of replies) is read once, not again from its start with each piece.
    """
    inbox, parsed, stack = connection.inbox, connection.parsed, connection.arrays
    encoder = connection.encoder
    decode = encoder.decode if encoder.decode_responses else None
    position, size = 0, len(inbox)
    while position < size:
        end = inbox.find(b"\r\n", position)
        if end < 0:
            break
        if inbox[position] == 42:  # "*" array
            length = int(inbox[position + 1 : end])
            position = end + 2
            if length > 0:
                stack.append(([], length))
                continue
            value: Any = None if length < 0 else []
        else:
            scalar = _scalar(inbox, position, end, decode)
            if scalar is None:
                break
            value, position = scalar
        while stack:  # a value completes the arrays it ends
            items, length = stack[-1]
            items.append(value)
            if len(items) < length:
                break
            value = stack.pop()[0]
        else:
            if isinstance(value, RedisConnectionError):  # e.g. "max number of clients"
                raise value
            parsed.append(value)
    del inbox[:position]


def _scalar(
    inbox: bytearray, position: int, end: int, decode: Callable[[bytes], Any] | None
) -> tuple[Any, int] | None:
    """The reply (not an array) at ``position``, whose first line ends at ``end``, and the
    position after it; None when a bulk string has not fully arrived."""
    kind = inbox[position]
    if kind == 58:  # ":" integer
        return int(inbox[position + 1 : end]), end + 2
    if kind == 36:  # "$" bulk string
        length = int(inbox[position + 1 : end])
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if len(inbox) < stop + 2:
            return None
        value = bytes(inbox[end + 2 : stop])
        return (decode(value) if decode else value), stop + 2
    if kind == 43:  # "+" simple string
        value = bytes(inbox[position + 1 : end])
        return (decode(value) if decode else value), end + 2
    if kind == 45:  # "-" error
        return redis_error(inbox[position + 1 : end].decode("utf-8", errors="replace")), end + 2
    raise InvalidResponse(f"Protocol Error: {bytes(inbox[position : end + 2])!r}")


def _discard(connection: Any) -> None:
    if connection is not None:
        connection.raw = None
        connection.disconnect()


def _as_error(exc: BaseException) -> Exception:
    return exc if isinstance(exc, Exception) else RedisError(str(exc))


def describe(error: Exception) -> str:
    """A short, password-free description of a node's error."""
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"

"""RESP, the Redis protocol: commands encoded once for every master, replies parsed as
they arrive (RESP2, as the connections are made).

Encoding a lock's command argument by argument costs as much as the round trip's system
calls once the masters answer in tens of microseconds, so the parts that repeat are
encoded once (:func:`evalsha_head`, :func:`bulk`) and joined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

from celery_singleton_beat._compat import redis_error

Command = Sequence[Any]
"""A command's arguments, or ``bytes`` already in RESP form."""


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return repr(arg).encode()
    raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")


def pack(commands: Sequence[Command]) -> bytes:
    """RESP encoding of a pipeline of commands, made once and sent to every master.

    A command is a sequence of arguments, or ``bytes`` already in RESP form (see
    :func:`evalsha_head`).
    """
    out: list[bytes] = []
    append = out.append
    for command in commands:
        if type(command) is bytes:
            append(command)
            continue
        append(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)
            data = arg.encode() if kind is str else b"%d" % arg if kind is int else _encode(arg)
            append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def evalsha_head(sha: str, keys: int, args: int) -> bytes:
    """The start of an ``EVALSHA`` of a script with ``keys`` keys and ``args`` arguments,
    in RESP; the keys and arguments follow as :func:`bulk` strings.

    Once the masters answer in tens of microseconds, encoding a lock's command argument
    by argument costs as much as the round trip's system calls: the parts that repeat
    are encoded once and joined (a command in ``bytes`` goes to :func:`pack` as it is).
    """
    return b"*%d\r\n%s" % (3 + keys + args, pack([("EVALSHA", sha, keys)])[len(b"*3\r\n") :])


def bulk(data: bytes) -> bytes:
    """``data`` as a RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


#: Commands that name no key (a Redis Cluster sends them with the next one that does).
_KEYLESS = frozenset({b"TIME", b"PING", b"ECHO", b"SCRIPT", b"WAIT", b"ASKING", b"INFO", b"ROLE"})
_SCRIPTS = frozenset({b"EVALSHA", b"EVAL"})


def command_key(command: Command) -> bytes | None:
    """The first key a command names (a script's first key), or None: what a Redis Cluster
    routes it by."""
    if type(command) is not bytes:
        name = _encode(command[0]).upper()
        if name in _SCRIPTS:
            return _encode(command[3]) if len(command) > 3 and int(command[2]) > 0 else None
        return None if name in _KEYLESS or len(command) < 2 else _encode(command[1])
    # in RESP: *<n> $<len> NAME $<len> ARG ...; a name, a SHA and a key count hold no CRLF,
    # a key may: it is cut by its length
    parts = command.split(b"\r\n", 4)
    name = parts[2].upper()
    if name in _SCRIPTS:
        parts = command.split(b"\r\n", 8)
        if len(parts) < 9 or parts[6] == b"0":
            return None
        return parts[8][: int(parts[7][1:])]
    if name in _KEYLESS or len(parts) < 5:
        return None
    return parts[4][: int(parts[3][1:])]


def only_integers(data: bytes, count: int) -> bool:
    """Whether ``data`` is exactly ``count`` integer replies (``:<digits>\\r\\n`` each)."""
    return (
        data[:1] == b":"
        and data[-2:] == b"\r\n"
        and data.count(b"\r\n") == count
        and data.count(b"\r\n:") == count - 1
    )


def parse_replies(connection: Any) -> None:
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

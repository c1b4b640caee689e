"""A master's reply timeout counts from when its batch was written: not from before a slow
write to another master (a batch too large for the socket buffer, a master busy reading),
nor from before the batch was encoded."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from celery_singleton_beat.connections import masters as wire
from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.connections.resp import pack
from celery_singleton_beat.testing import RedisServer

BUSY = (
    "local t = redis.call('TIME'); local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1])\n"
    "while t[1] * 1000000 + t[2] < stop do t = redis.call('TIME') end\nreturn 1"
)


def busy(server: RedisServer, seconds: float) -> socket.socket:
    """Keep ``server`` from reading anything for ``seconds`` (a script that spins)."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(pack([("EVAL", BUSY, 0, int(seconds * 1_000_000))]))
    return sock


def test_a_slow_write_to_one_master_does_not_eat_into_the_next_masters_timeout(
    three_masters: list[RedisServer],
) -> None:
    masters = Masters.from_urls([s.url for s in three_masters], 1.0)
    try:
        assert masters.broadcast([("PING",)]) == [[b"PONG"]] * 3  # connections warm
        big = [("SET", "big", b"x" * 32_000_000)]
        spinning = [busy(three_masters[0], 0.6), busy(three_masters[1], 1.3)]
        time.sleep(0.05)  # both scripts running
        started = time.monotonic()
        # master 0 takes its 32 MB batch once its script ends (0.6 s); master 1 answers
        # its small batch at 1.3 s: within 1 s of its write, not of the round trip's start
        results = masters.scatter([big, [("PING",)], [("PING",)]])
        took = time.monotonic() - started
        assert results == [[b"OK"], [b"PONG"], [b"PONG"]], results
        assert 1.1 < took < 1.6, took
        for sock in spinning:
            sock.close()
    finally:
        masters.close()


def test_the_time_spent_encoding_a_batch_is_no_masters_silence(
    three_masters: list[RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    masters = Masters.from_urls([s.url for s in three_masters], 0.05)
    try:
        assert masters.broadcast([("PING",)]) == [[b"PONG"]] * 3  # connections warm

        def slow_pack(commands: Any) -> bytes:  # as 10,000 commands take on a slow machine
            time.sleep(0.2)
            return pack(commands)

        monkeypatch.setattr(wire, "pack", slow_pack)
        assert masters.broadcast([("PING",)]) == [[b"PONG"]] * 3
    finally:
        masters.close()

"""Idle connections cannot exhaust a beat replica's health server: each connection has a
deadline after which the server closes it, and connections past the bound are closed at
once, while a normal probe keeps being answered."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_singleton_beat.beat.health import MAX_CONNECTIONS, REQUEST_TIMEOUT
from celery_singleton_beat.testing import Process, RedisServer, free_port, wait_for
from tests.support.clusters import beat_cluster

pytestmark = pytest.mark.slow


def get(port: int, path: str) -> tuple[int, float]:
    """Status and seconds taken of one GET."""
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return int(response.status), time.monotonic() - started


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def closed_after(connection: socket.socket, started: float, wait: float) -> float | None:
    """Seconds from ``started`` until the server closed ``connection`` (None: still open)."""
    connection.settimeout(max(0.01, started + wait - time.monotonic()))
    try:
        data = connection.recv(1024)
    except TimeoutError:
        return None
    except ConnectionResetError:
        data = b""
    return time.monotonic() - started if data == b"" else None


@contextlib.contextmanager
def replica_with_health(masters: list[RedisServer], workdir: Path) -> Iterator[int]:
    port = free_port()
    with beat_cluster(workdir, masters, {"two": {"every": 2}}) as cluster:
        replica: Process = cluster.start_replica(
            "r1", settings={"singleton_beat_health_port": port}
        )

        def answers() -> bool:
            try:
                return get(port, "/healthz")[0] == 200
            except OSError:
                return False

        wait_for(answers, 30, f"/healthz\n{replica.text()}")
        yield port
        assert replica.alive()


def test_fifty_idle_connections_are_closed_by_the_server_and_probes_still_answer(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    with replica_with_health(three_masters, tmp_path) as port:
        opened = time.monotonic()
        idle = idle_connections(port, 50)
        status, took = get(port, "/healthz")
        closed = [closed_after(c, opened, REQUEST_TIMEOUT + 2) for c in idle]
        for connection in idle:
            connection.close()
        after = get(port, "/healthz")[0]
    assert (status, after) == (200, 200)
    assert took < 1.0, f"/healthz took {took:.2f}s beside 50 idle connections"
    assert None not in closed, f"{closed.count(None)} idle connections still open"
    assert min(closed) >= REQUEST_TIMEOUT - 0.1 and max(closed) <= REQUEST_TIMEOUT + 1


def test_connections_past_the_bound_are_closed_at_once(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    with replica_with_health(three_masters, tmp_path) as port:
        held = idle_connections(port, MAX_CONNECTIONS)
        time.sleep(0.5)  # every held connection accepted before the extra ones
        opened = time.monotonic()
        extra = idle_connections(port, 10)
        closed = [closed_after(c, opened, 1.0) for c in extra]
        for connection in held + extra:
            connection.close()
        status = get(port, "/healthz")[0]
    assert None not in closed, f"{closed.count(None)} of 10 connections past the bound open"
    assert max(closed) < 1.0  # type: ignore[type-var]
    assert status == 200

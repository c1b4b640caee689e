"""The TCP proxy the outage tests cut: a cut leaves no connection through, not even one
being accepted at that very moment, and a restore listens again at once."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from celery_singleton_beat.testing import proxy as proxy_module
from celery_singleton_beat.testing.proxy import TcpProxy


def test_a_connection_accepted_while_the_proxy_is_cut_is_closed_not_forwarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    proxy = TcpProxy(server.getsockname()[1])
    dialing, cut_done = threading.Event(), threading.Event()
    create = socket.create_connection

    def slow_upstream(*args: object, **kwargs: object) -> socket.socket:
        dialing.set()  # the proxy accepted the client and dials the server ...
        cut_done.wait(5)  # ... while the test cuts it
        return create(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(proxy_module.socket, "create_connection", slow_upstream)
    client = create(("127.0.0.1", proxy.port), timeout=5)
    try:
        assert dialing.wait(5)
        proxy.cut()
        cut_done.set()
        client.settimeout(5)
        assert client.recv(1) == b"", "the client's connection is closed by the cut"
    finally:
        client.close()
        proxy.close()
        server.close()


def test_a_cut_proxy_restored_at_once_listens_again_on_its_port() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    proxy = TcpProxy(server.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    try:
        server.accept()[0].close()  # forwarded: the proxy's thread goes back to accept()
        time.sleep(0.1)
        proxy.cut()  # while that thread is blocked in accept() on the listener
        proxy.restore()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5):
            pass
    finally:
        client.close()
        proxy.close()
        server.close()

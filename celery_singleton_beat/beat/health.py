"""``/healthz`` and ``/readyz`` for a beat replica, served from a daemon thread.

- ``/healthz``: 200 while the scheduler loop ticks, 503 when it has stopped ticking.
- ``/readyz``: 200 while a majority of Redis masters is reachable, 503 otherwise.
- ``/metrics``: Prometheus text, when a metrics renderer is given.

One request per connection, each with a deadline: a connection that has not been
answered within :data:`REQUEST_TIMEOUT` is closed by the server (an idle or trickling
client cannot keep a thread), and past :data:`MAX_CONNECTIONS` open connections new
ones are closed at once, so the threads stay bounded whatever connects to the port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from celery_singleton_beat.errors import ConfigurationError

logger = logging.getLogger(__name__)


class Probed(NamedTuple):
    """What a probe found: whether all is well, and a line saying what it saw."""

    ok: bool
    detail: str


class Response(NamedTuple):
    status: int
    body: bytes
    content_type: str


Probe = Callable[[], Probed]

#: Seconds a connection may take from accept to answer before the server closes it.
REQUEST_TIMEOUT = 3.0
#: Connections open at once (one thread each); more are closed as they arrive.
MAX_CONNECTIONS = 64


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them, each with a deadline.

    ``serve_forever`` calls :meth:`service_actions` every half second; it shuts down the
    sockets past their deadline, which ends the blocked read of their handler thread.
    """

    daemon_threads = True
    request_queue_size = 128  # the listen backlog (5 by default): a burst waits, not retries

    def __init__(self, address: tuple[str, int], handler: Any, timeout: float, limit: int) -> None:
        super().__init__(address, handler)
        self.request_timeout = timeout
        self.max_connections = limit
        self._deadlines: dict[Any, float] = {}
        self._mutex = threading.Lock()
        self._refusing = False

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._mutex:
            full = len(self._deadlines) >= self.max_connections
            if not full:
                self._deadlines[request] = time.monotonic() + self.request_timeout
        if full != self._refusing:
            self._refusing = full
            if full:
                logger.warning(
                    "health: %d connections open, closing new ones until some finish",
                    self.max_connections,
                )
        return not full

    def shutdown_request(self, request: Any) -> None:
        with self._mutex:
            self._deadlines.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        now = time.monotonic()
        with self._mutex:
            late = [request for request, deadline in self._deadlines.items() if deadline <= now]
        for request in late:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)


class _BoundedServer6(_BoundedServer):
    address_family = socket.AF_INET6


class HealthServer:
    """A tiny HTTP server answering the probes on ``host`` (default every IPv4 interface,
    as Kubernetes probes reach the pod IP); ``port=0`` picks a free port."""

    def __init__(
        self,
        port: int,
        alive: Probe,
        ready: Probe,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        host: str = "0.0.0.0",
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        routes: dict[str, Callable[[], Response]] = {
            "/healthz": lambda: _probe(alive),
            "/readyz": lambda: _probe(ready),
        }
        if metrics is not None:
            routes["/metrics"] = lambda: Response(200, *metrics())

        class Handler(BaseHTTPRequestHandler):
            timeout = request_timeout  # per read; the server's deadline bounds the whole

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                status, body, content_type = (
                    route() if route else Response(404, b"not found\n", "text/plain")
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("health: " + format, *args)

        server = _BoundedServer6 if _is_ipv6(host) else _BoundedServer
        try:
            self._server = server((host, port), Handler, request_timeout, max_connections)
        except OSError as exc:
            raise ConfigurationError(
                "singleton_beat_health_host/singleton_beat_health_port",
                f"{host}:{port}",
                f"an address of this host and a free port ({exc.strerror or exc})",
            ) from None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="singleton-beat-health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("health endpoints on %s port %d: /healthz, /readyz", self.host, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _probe(check: Probe) -> Response:
    ok, detail = check()
    return Response(
        (200 if ok else 503),
        f"{'ok' if ok else 'unavailable'}: {detail}\n".encode(),
        "text/plain",
    )


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False

"""``/healthz`` and ``/readyz`` for a beat replica, served from a daemon thread.

- ``/healthz``: 200 while the scheduler loop ticks, 503 when it has stopped ticking.
- ``/readyz``: 200 while a majority of Redis masters is reachable, 503 otherwise.
- ``/metrics``: Prometheus text, when a metrics renderer is given.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from celery_singleton_beat.errors import ConfigurationError

logger = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
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
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/healthz": lambda: _probe(alive),
            "/readyz": lambda: _probe(ready),
        }
        if metrics is not None:
            routes["/metrics"] = lambda: (200, *metrics())

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                status, body, content_type = (
                    route() if route else (404, b"not found\n", "text/plain")
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("health: " + format, *args)

        server = _Server6 if _is_ipv6(host) else _Server
        try:
            self._server = server((host, port), Handler)
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


def _probe(check: Probe) -> tuple[int, bytes, str]:
    ok, detail = check()
    return (
        (200 if ok else 503),
        f"{'ok' if ok else 'unavailable'}: {detail}\n".encode(),
        "text/plain",
    )


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False

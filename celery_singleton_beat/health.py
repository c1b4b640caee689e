"""``/healthz`` and ``/readyz`` for a beat replica, served from a daemon thread.

- ``/healthz``: 200 while the scheduler loop ticks, 503 when it has stopped ticking.
- ``/readyz``: 200 while a majority of Redis masters is reachable, 503 otherwise.
- ``/metrics``: Prometheus text, when a metrics renderer is given.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]


class HealthServer:
    """A tiny HTTP server answering the probes; ``port=0`` picks a free port."""

    def __init__(
        self,
        port: int,
        alive: Probe,
        ready: Probe,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        host: str = "",
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

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="singleton-beat-health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("health endpoints on port %d: /healthz, /readyz", self.port)
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

"""A TCP proxy in front of the broker that can be made slow or black-holed.

- ``delay(seconds)``: every chunk a client sends reaches the broker that much later (in
  order), so every broker operation takes at least that long;
- ``black_hole()``: connections are accepted and what clients send is read and dropped;
  nothing is ever answered;
- ``heal()``: normal forwarding again; connections held by the black hole are closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class BrokerProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.delay_s = 0.0
        self.holed = False
        self._sockets: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._mutex = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def delay(self, seconds: float) -> None:
        self.delay_s = seconds

    def black_hole(self) -> None:
        with self._mutex:
            self.holed = True
            live, self._sockets = self._sockets, []
        for sock in live:  # connections made before go quiet too
            self._held.append(sock)

    def heal(self) -> None:
        with self._mutex:
            self.holed = False
            held, self._held = self._held, []
        for sock in held:
            _close(sock)

    def close(self) -> None:
        self._listener.close()
        self.heal()
        with self._mutex:
            live, self._sockets = self._sockets, []
        for sock in live:
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.holed:
                self._held.append(client)
                threading.Thread(target=_swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._mutex:
                self._sockets += [client, upstream]
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._back, args=(upstream, client), daemon=True).start()

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.delay_s:
                    time.sleep(self.delay_s)
                if self.holed:
                    continue  # read and dropped
                upstream.sendall(data)
        _close(upstream)

    def _back(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if not self.holed:
                    client.sendall(data)
        _close(client)


def _swallow(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()

"""A TCP proxy in front of a server (a broker, a database) that a test slows, holes or cuts.

- ``delay(seconds)``: every chunk a client sends reaches the server that much later (in
  order), so every operation takes at least that long;
- ``black_hole()``: connections are accepted and what clients send is read and dropped;
  nothing is ever answered, on new connections and on those made before;
- ``cut()``: every connection is dropped and the port stops listening (the server "goes
  away" without being touched);
- ``restore()``: normal forwarding again: the port listens again, and the connections the
  black hole held are closed (their clients connect anew);
- ``retarget(port)``: new connections go to another server and those to the old one are
  cut, as when a cloud endpoint's name moves to a promoted replica.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay_s = 0.0
        self.holed = False
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._mutex = threading.Lock()
        self._listener: socket.socket | None = None
        self._listen()

    @property
    def url(self) -> str:
        """The proxy as a Redis URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def delay(self, seconds: float) -> None:
        self.delay_s = seconds

    def black_hole(self) -> None:
        with self._mutex:
            self.holed = True
            live, self._sockets = self._sockets, []
            self._held += live  # connections made before go quiet too

    def cut(self) -> None:
        with self._mutex:
            listener, self._listener = self._listener, None
            dropped = [*self._sockets, *self._held]
            self._sockets, self._held = [], []
        if listener is not None:
            # shut down, not only closed: a thread blocked in its accept() keeps a closed
            # listener listening, and its port taken, until a client connects
            _close(listener)
        for sock in dropped:
            _close(sock)

    close = cut

    def restore(self) -> None:
        with self._mutex:
            self.holed = False
            held, self._held = self._held, []
        for sock in held:
            _close(sock)
        if self._listener is None:
            self._listen()

    def retarget(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        with self._mutex:
            self.target = (target_host, target_port)
            dropped, self._sockets = self._sockets, []
        for sock in dropped:
            _close(sock)

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.holed:
                with self._mutex:
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
                cut = self._listener is not listener  # cut while this one was dialled
                if not cut:
                    self._sockets += [client, upstream]
            if cut:
                _close(client)
                _close(upstream)
                return
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

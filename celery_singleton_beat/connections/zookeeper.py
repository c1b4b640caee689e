"""A ZooKeeper ensemble through kazoo: one session, requests pipelined, the servers' clock.

Requests are pipelined (kazoo's ``*_async`` calls on one session, which ZooKeeper answers
in order): a batch costs one round trip per :data:`IN_FLIGHT` requests, and none is sent
while the session is not connected.

**Time is the ensemble's.** ZooKeeper stamps every write with the leader's clock (a
znode's ``mtime``), the same on every member. :meth:`ZooKeeper.server_now` writes the
``clock`` znode and reads that stamp back: a claim's or a lock's expiry is its znode's
``mtime`` plus its TTL, compared with that stamp, never with a replica's clock. The clock
is written *before* the znodes it judges are read, in the same pipeline, so it is never
ahead of them: an expiry is, if anything, seen late, never early.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import ZnodeStat

from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.settings.zookeeper import ZooKeeperSettings

__all__ = ["Node", "Znode", "ZooKeeper", "dumps", "loads", "node_name"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What a znode read gives: its data and stat, or None when it does not exist.
Znode = tuple[bytes, ZnodeStat] | None
#: A written znode's stat or the error the write met (transactions answer per operation).
Node = ZnodeStat | Exception

#: How kazoo reconnects unless told otherwise: forever, at most a second apart (its own
#: default waits up to an hour between attempts after a long outage).
RECONNECT = {"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0}
#: Requests of a batch sent before the oldest one's reply is read. kazoo wakes its
#: connection thread with one byte on a socket pair per request, which that thread does
#: not read while it waits to reconnect: thousands of requests sent as a member dies would
#: fill the socket and block the sender for good, past any deadline.
IN_FLIGHT = 64


class _Quieter(logging.Filter):
    """kazoo's warnings (one per reconnect attempt) as DEBUG: beat logs one line when the
    ensemble stops answering and one when it answers again."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return KAZOO_LOGGER.isEnabledFor(logging.DEBUG)
        return True


#: kazoo's log lines, under the library's name.
KAZOO_LOGGER = logging.getLogger(f"{__name__}.kazoo")
KAZOO_LOGGER.addFilter(_Quieter())

#: Errors that say "the ensemble did not answer" (not "the znode was not as expected").
UNREACHABLE: tuple[type[BaseException], ...] = (KazooException, KazooTimeoutError)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def loads(data: bytes) -> Any:
    return json.loads(data) if data else {}


def node_name(name: str) -> str:
    """A name as one path segment: '/' and '%' escaped, '.' too (``.`` and ``..`` are not
    znode names)."""
    return name.replace("%", "%25").replace("/", "%2F").replace(".", "%2E") or "%00"


def name_of(segment: str) -> str:
    """The name a :func:`node_name` segment stands for."""
    if segment == "%00":
        return ""
    return segment.replace("%2E", ".").replace("%2F", "/").replace("%25", "%")


class ZooKeeper:
    """One kazoo session on the ensemble ``settings`` names, under the path ``root``.

    The session connects in the background: an ensemble that does not answer at start-up
    is an outage like any other (requests raise
    :class:`~celery_singleton_beat.errors.StoreUnavailable` until it answers).
    """

    def __init__(self, settings: ZooKeeperSettings, root: str, *, wait: float) -> None:
        self.settings = settings
        self.root = root.rstrip("/") or "/"
        self.wait = wait
        """Seconds a batch waits for its replies before the ensemble counts as unreachable."""
        options = {**settings.options, "logger": KAZOO_LOGGER}
        options["connection_retry"] = {
            **RECONNECT,
            **(settings.options.get("connection_retry") or {}),
        }
        self.client = KazooClient(hosts=settings.hosts, **options)
        self.client.start_async().wait(timeout=wait)  # not connected yet: not an error
        self._made: set[str] = set()
        self._made_lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"ZooKeeper {self.settings.shown_hosts}"

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return StoreUnavailable(self.name, what, detail)

    def ensure(self, *paths: str) -> bool:
        """Make the persistent znodes ``paths`` (and their parents) once per process; False
        when all of them were made already."""
        missing = [p for p in paths if p not in self._made]
        if not missing:
            return False
        what = "make its znodes"
        for reply in self.batch(what, lambda c: (c.ensure_path_async(p) for p in missing)):
            _checked(self, what, reply)
        with self._made_lock:
            self._made.update(missing)
        return True

    def batch(self, what: str, send: Callable[[KazooClient], Iterable[IAsyncResult]]) -> list[Any]:
        """Send every request ``send`` makes (lazily: a generator), reading replies as it
        goes, :data:`IN_FLIGHT` at most outstanding; every reply's value or the exception
        it raised (NoNodeError, BadVersionError, ...). StoreUnavailable when the ensemble
        does not answer within :attr:`wait`.

        A connection lost on the way (its member died; the session moves to another) sends
        the batch again once the session is back, within the same wait: every write this
        library sends is conditional (a ``create``, or a version named), so a write that
        had been applied is refused the second time, and its caller reads again."""
        deadline = time.monotonic() + self.wait
        while True:
            try:
                return self._send(send, deadline)
            except UNREACHABLE as exc:
                if not (_lost(exc) and self._reconnected(deadline)):
                    raise self.unavailable(what, exc) from exc

    def _send(
        self, send: Callable[[KazooClient], Iterable[IAsyncResult]], deadline: float
    ) -> list[Any]:
        replies: list[Any] = []
        pending: deque[IAsyncResult] = deque()
        requests = iter(send(self.client)) if self.client.connected else None
        if requests is None:
            raise ConnectionLoss("not connected")
        for request in requests:
            pending.append(request)
            if len(pending) >= IN_FLIGHT:
                replies.append(self._reply(pending.popleft(), deadline))
                if not self.client.connected:
                    raise ConnectionLoss("the connection was lost during a batch")
        replies.extend(self._reply(one, deadline) for one in pending)
        return replies

    @staticmethod
    def _reply(one: IAsyncResult, deadline: float) -> Any:
        try:
            return one.get(timeout=max(0.001, deadline - time.monotonic()))
        except (NoNodeError, NodeExistsError) as exc:
            return exc
        except KazooException as exc:
            if _lost(exc) or isinstance(exc, OperationTimeoutError):
                raise
            return exc

    def _reconnected(self, deadline: float) -> bool:
        """Wait for the session to be connected again, until ``deadline``."""
        while time.monotonic() < deadline:
            if self.client.connected:
                return True
            time.sleep(0.01)
        return False

    def read(self, what: str, paths: Sequence[str], *, clock: bool = False) -> list[Znode]:
        """Each znode's data and stat (None where absent), in one round trip; with
        ``clock``, the servers' time first (``self.now`` afterwards)."""
        clock_path = self.path("clock")

        def send(client: KazooClient) -> Iterable[IAsyncResult]:
            if clock:
                yield client.set_async(clock_path, b"")
            for path in paths:
                yield client.get_async(path)

        replies = self.batch(what, send)
        if clock:
            stamp = replies.pop(0)
            if isinstance(stamp, NoNodeError):
                self.ensure(clock_path)
                return self.read(what, paths, clock=True)
            if isinstance(stamp, Exception):
                raise self.unavailable(what, stamp)
            self.now = int(stamp.mtime)
        return [None if isinstance(r, NoNodeError) else _checked(self, what, r) for r in replies]

    now: int = 0
    """The servers' time (ms) at the last ``read(..., clock=True)``."""

    def server_now(self) -> int:
        """The ensemble's time now, in ms (one write)."""
        self.read("read the ensemble's time", [], clock=True)
        return self.now

    def commit(self, what: str, build: Callable[[Any], None]) -> list[Any] | None:
        """One transaction (``build`` adds its operations): the results, or None when it
        was rolled back because a znode was not as expected (read again and retry)."""

        def send(client: KazooClient) -> list[IAsyncResult]:
            transaction = client.transaction()
            build(transaction)
            if not transaction.operations:
                return []
            return [transaction.commit_async()]

        replies = self.batch(what, send)
        if not replies:
            return []
        results = replies[0]
        if isinstance(results, Exception):
            raise self.unavailable(what, results)
        if any(isinstance(r, Exception) for r in results):
            return None
        return list(results)

    def children(self, what: str, path: str) -> list[str]:
        [found] = self.batch(what, lambda client: [client.get_children_async(path)])
        if isinstance(found, NoNodeError):
            return []
        return list(_checked(self, what, found))

    def close(self) -> None:
        try:
            self.client.stop()
            self.client.close()
        except UNREACHABLE as exc:  # pragma: no cover (closing a broken session)
            logger.debug("closing %s: %s", self.name, exc)


def _lost(exc: BaseException) -> bool:
    """Whether a request failed because its connection or session was lost (sent again
    once the session is back)."""
    return isinstance(exc, (ConnectionLoss, ConnectionClosedError, SessionExpiredError))


def _checked(zk: ZooKeeper, what: str, reply: T) -> T:
    if isinstance(reply, Exception):
        raise zk.unavailable(what, reply)
    return reply

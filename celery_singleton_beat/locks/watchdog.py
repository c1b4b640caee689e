"""Keep a lease alive while its owner works, and say so at once when that fails."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery_singleton_beat.errors import LockError
from celery_singleton_beat.locks.base import Lease, LockBackend

logger = logging.getLogger(__name__)


class Watchdog:
    """Extends ``lease`` every ``ttl/3`` seconds from a daemon thread.

    When an extension fails (the key expired or was taken, or no majority answered) the
    lease is marked ``lost`` and ``on_lost(lease)`` is called once, from the watchdog
    thread; the owner decides what to do (stop sending, record the run as lost). The
    watchdog then stops. Use it as a context manager, or call :meth:`start` and
    :meth:`stop`.

    Why ttl/3: an extension that fails still leaves two thirds of the TTL for the owner
    to hear about it and stop before another owner can get the key.
    """

    def __init__(
        self,
        lock: LockBackend,
        lease: Lease,
        on_lost: Callable[[Lease], object] | None = None,
        *,
        ttl: float | None = None,
        interval: float | None = None,
    ) -> None:
        self.lock = lock
        self.lease = lease
        self.ttl = ttl if ttl is not None else lease.ttl
        self.interval = interval if interval is not None else self.ttl / 3
        self.on_lost = on_lost
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"singleton-beat-watchdog:{lease.key}", daemon=True
        )

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop extending; the lease itself is left as it is (release it separately)."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            if self.lease.released:
                return
            try:
                extended = self.lock.extend(self.lease, self.ttl)
                reason = "the key expired or belongs to another owner"
            except LockError as exc:
                extended, reason = False, str(exc)
            if self._stopped.is_set() or self.lease.released:
                return
            if not extended:
                self._lose(reason)
                return

    def _lose(self, reason: str) -> None:
        self.lease.lost = True
        logger.warning("lock %r lost: extension failed (%s)", self.lease.key, reason)
        if self.on_lost is None:
            return
        try:
            self.on_lost(self.lease)
        except Exception:
            logger.exception("lock %r: the on_lost callback failed", self.lease.key)

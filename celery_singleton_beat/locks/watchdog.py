"""Keep a lease alive while its owner works, and say so at once when that fails."""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
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
        kept = _Kept(self.lock, self.lease, self.on_lost, self.ttl)
        while not self._stopped.wait(self.interval):
            if self.lease.released or not kept.extend(self._stopped):
                return


class LeaseKeeper:
    """One thread that keeps many leases alive, for processes that hold many at once.

    Same promise as :class:`Watchdog` (extend every ttl/3; on a failed extension mark the
    lease lost and call ``on_lost`` once), without a thread per lease: starting and
    joining a thread costs more than the lock round trips of a short task. The thread
    starts on first use and again after a fork.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mutex = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Kept]] = []
        self._serial = 0
        self._started = False  # the thread, in this process (a forked child has none)
        self._wakes_at = float("inf")  # when the thread wakes next by itself
        os.register_at_fork(after_in_child=self._forked)

    def keep(
        self, lock: LockBackend, lease: Lease, on_lost: Callable[[Lease], object] | None = None
    ) -> _Kept:
        """Keep ``lease`` alive until the returned handle's ``stop()``.

        Cheap enough for every task run: no thread is woken unless the new lease is due
        before the thread would wake anyway, and leases already stopped are dropped from
        the front of the queue here rather than held until their turn.
        """
        kept = _Kept(lock, lease, on_lost)
        due = lease.clock_now() + lease.ttl / 3
        with self._lock:  # the condition's own lock, taken without its Python wrapper
            if not self._started:
                self._start_thread()
            heap = self._heap
            while heap and heap[0][2].stopped:
                heapq.heappop(heap)
            self._serial += 1
            heapq.heappush(heap, (due, self._serial, kept))
            if due < self._wakes_at:
                self._mutex.notify()
        return kept

    def _push(self, kept: _Kept) -> float:
        self._serial += 1
        due = kept.lease.clock_now() + kept.lease.ttl / 3
        heapq.heappush(self._heap, (due, self._serial, kept))
        return due

    def _start_thread(self) -> None:
        self._started = True
        thread = threading.Thread(target=self._run, name="singleton-beat-keeper", daemon=True)
        thread.start()

    def _forked(self) -> None:
        """In a forked child: no thread yet, and none of the parent's leases to keep."""
        self._lock = threading.Lock()
        self._mutex = threading.Condition(self._lock)
        self._heap = []
        self._started = False
        self._wakes_at = float("inf")

    def _run(self) -> None:
        while True:
            with self._mutex:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakes_at = self._heap[0][0] if self._heap else float("inf")
                    self._mutex.wait(timeout)
                self._wakes_at = 0.0  # awake: a lease kept meanwhile waits for the next turn
                _due, _serial, kept = heapq.heappop(self._heap)
            if kept.stopped or kept.lease.released:
                continue
            if kept.extend():
                with self._mutex:
                    self._push(kept)


class _Kept:
    """A lease being kept alive, by a :class:`Watchdog` or a :class:`LeaseKeeper`."""

    __slots__ = ("lease", "lock", "on_lost", "stopped", "ttl")

    def __init__(
        self,
        lock: LockBackend,
        lease: Lease,
        on_lost: Callable[[Lease], object] | None,
        ttl: float | None = None,
    ) -> None:
        self.lock = lock
        self.lease = lease
        self.on_lost = on_lost
        self.ttl = ttl
        self.stopped = False

    def stop(self) -> None:
        """Stop extending (the keeper drops the lease at its next turn)."""
        self.stopped = True

    def extend(self, stopped: threading.Event | None = None) -> bool:
        """Extend once; on failure mark the lease lost and tell the owner (once), unless
        ``stop()`` was called (or ``stopped`` set) meanwhile."""
        try:
            extended = self.lock.extend(self.lease, self.ttl or self.lease.ttl)
            reason = "the key expired or belongs to another owner"
        except LockError as exc:
            extended, reason = False, str(exc)
        if extended or self.stopped or self.lease.released:
            return extended
        if stopped is not None and stopped.is_set():
            return extended
        self.lease.lost = True
        logger.warning("lock %r lost: extension failed (%s)", self.lease.key, reason)
        if self.on_lost is not None:
            try:
                self.on_lost(self.lease)
            except Exception:
                logger.exception("lock %r: the on_lost callback failed", self.lease.key)
        return False


#: The process's shared keeper.
keeper = LeaseKeeper()

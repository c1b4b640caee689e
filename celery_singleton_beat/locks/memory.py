"""An in-process lock backend with the full contract, for unit tests and single-process use."""

from __future__ import annotations

import secrets
import threading
import time

from celery_singleton_beat.locks.base import Clock, Lease, LockBackend


class MemoryLock(LockBackend):
    """Locks held in a dictionary, guarded by a mutex; expiry follows the given clock.

    Useful in tests (inject a clock and step through expiry) and wherever every
    contender lives in one process. It offers no protection across processes.
    """

    def __init__(self, *, retry_delay: float = 0.01, clock: Clock = time.monotonic) -> None:
        super().__init__(retry_delay=retry_delay, clock=clock)
        self._mutex = threading.Lock()
        self._held: dict[str, tuple[str, float]] = {}
        self._fences: dict[str, int] = {}

    def do_acquire(self, key: str, ttl: float, token: str | None = None) -> Lease | None:
        now = self.clock()
        with self._mutex:
            held = self._held.get(key)
            if held is not None and held[1] > now and held[0] != token:
                return None
            token = token or secrets.token_hex(16)
            fence = self._fences.get(key, 0) + 1
            self._fences[key] = fence
            self._held[key] = (token, now + ttl)
        return Lease(key, token, fence=fence, ttl=ttl, valid_until=now + ttl, clock=self.clock)

    def holder(self, key: str) -> str | None:
        with self._mutex:
            held = self._held.get(key)
        return held[0] if held is not None and held[1] > self.clock() else None

    def do_extend(self, lease: Lease, ttl: float) -> bool:
        now = self.clock()
        with self._mutex:
            held = self._held.get(lease.key)
            if held is None or held[0] != lease.token or held[1] <= now:
                return False
            self._held[lease.key] = (lease.token, now + ttl)
        lease.valid_until = now + ttl
        lease.ttl = ttl
        return True

    def do_release(self, lease: Lease) -> bool:
        now = self.clock()
        with self._mutex:
            held = self._held.get(lease.key)
            if held is None or held[0] != lease.token:
                return False
            del self._held[lease.key]
            return held[1] > now

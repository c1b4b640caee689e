"""Redlock: a lock held on a majority of independent Redis masters.

One attempt is one round trip: the acquire script goes to every master at once and the
replies are read against one deadline (see :mod:`.nodes`). The lock is ours when a
majority granted it and time is left::

    validity = ttl - elapsed - drift        drift = ttl * 0.01 + 2 ms

with ``elapsed`` measured on the monotonic clock. A failed attempt is released on every
master before anyone waits or retries, so it never blocks the next contender for a TTL.

Fencing tokens come from a per-key counter incremented by the same script on each master
that granted; the lease carries the maximum. Any two majorities share a master, so as long
as every master that granted holds the maximum, the next grant sees a larger value. When
the granting masters disagree (one restarted empty, one missed grants while unreachable)
a second round trip raises their counters to the maximum before the lease is handed out.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable
from typing import Any

from celery_singleton_beat import defaults
from celery_singleton_beat.errors import QuorumUnavailable
from celery_singleton_beat.locks.base import Clock, Lease, LockBackend, check_ttl
from celery_singleton_beat.locks.nodes import Masters, describe
from celery_singleton_beat.schema import DEFAULT_PREFIX, Keys

logger = logging.getLogger(__name__)

DEFAULT_NODE_TIMEOUT = defaults.NODE_TIMEOUT
DEFAULT_FENCE_RETENTION = defaults.LOCK_FENCE_RETENTION


def clock_drift(ttl: float) -> float:
    """Allowance for clocks running at different rates on the masters during ``ttl``."""
    return ttl * 0.01 + 0.002


def default_owner() -> str:
    """``host/pid`` of this process; a lock token is 128 random bits, ``@``, the owner."""
    return f"{socket.gethostname()}/{os.getpid()}"


class Redlock(LockBackend):
    """Majority lock over N independent Redis masters (N = 1 is plain single-node Redis).

    Build it with :meth:`from_urls`. Thread-safe: each round trip takes its own
    connection per master, so a watchdog thread can extend while the owner acquires.
    """

    # KEYS[1] lock key, KEYS[2] fence counter
    # ARGV[1] token, ARGV[2] ttl in ms, ARGV[3] counter retention in ms (0: keep)
    # -> the new fencing token when granted here, 0 when held by another owner
    # (a key held with this very token is granted again: a hand-over to a known successor)
    ACQUIRE = """
    local current = redis.call('GET', KEYS[1])
    if current and current ~= ARGV[1] then return 0 end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    local fence = redis.call('INCR', KEYS[2])
    if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
    return fence
    """

    # KEYS[1] fence counter; ARGV[1] the fence to reach, ARGV[2] retention in ms (0: keep)
    RAISE_FENCE = """
    local current = tonumber(redis.call('GET', KEYS[1]) or '0')
    if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
    if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
    return 1
    """

    # KEYS[1] lock key; ARGV[1] token, ARGV[2] ttl in ms
    # -> 1 when extended, 0 when the key is gone or another owner's (it is not re-created)
    EXTEND = """
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
    """

    # KEYS[1] lock key; ARGV[1] token -> 1 when deleted here, else 0
    RELEASE = """
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    return redis.call('DEL', KEYS[1])
    """

    def __init__(
        self,
        masters: Masters,
        *,
        prefix: str = DEFAULT_PREFIX,
        fence_retention: float | None = DEFAULT_FENCE_RETENTION,
        owner: str | None = None,
        retry_delay: float = 0.05,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(retry_delay=retry_delay, clock=clock)
        self.masters = masters
        self.prefix = prefix
        if fence_retention is not None:
            fence_retention = check_ttl(fence_retention, "fence_retention")
        retention = fence_retention or 0.0
        self._retention_ms = int(retention * 1000)
        self.owner = owner or default_owner()
        self._acquire = masters.script(self.ACQUIRE)
        self._raise = masters.script(self.RAISE_FENCE)
        self._extend = masters.script(self.EXTEND)
        self._release = masters.script(self.RELEASE)

    @classmethod
    def from_urls(
        cls,
        urls: Iterable[str] | str,
        *,
        node_timeout: float = DEFAULT_NODE_TIMEOUT,
        prefix: str = DEFAULT_PREFIX,
        fence_retention: float | None = DEFAULT_FENCE_RETENTION,
        owner: str | None = None,
        retry_delay: float = 0.05,
        clock: Clock = time.monotonic,
    ) -> Redlock:
        """A Redlock over the masters at ``urls`` (a list, or one comma-separated string).

        ``node_timeout`` bounds how long one master may take to answer; keep it far below
        the TTLs you use. Raises :class:`~celery_singleton_beat.errors.ConfigurationError`
        for an empty list, a malformed URL or a master given twice.
        """
        masters = Masters.from_urls(urls, node_timeout)
        return cls(
            masters,
            prefix=prefix,
            fence_retention=fence_retention,
            owner=owner,
            retry_delay=retry_delay,
            clock=clock,
        )

    @property
    def quorum(self) -> int:
        return self.masters.quorum

    def lock_key(self, key: str) -> str:
        """The Redis key that holds ``key``'s lock token."""
        return Keys(self.prefix).lock(key)

    def fence_key(self, key: str) -> str:
        return Keys(self.prefix).fence(key)

    def holder(self, key: str) -> str | None:
        """The token most masters hold ``key`` with, or None when free on a majority."""
        replies = self.masters.broadcast([("GET", self.lock_key(key))])
        values = [r[0] for r in replies if not isinstance(r, Exception) and r[0] is not None]
        if not values:
            return None
        top = max(set(values), key=values.count)
        return top.decode() if isinstance(top, bytes) else str(top)

    def do_acquire(self, key: str, ttl: float, token: str | None = None) -> Lease | None:
        token = token or f"{secrets.token_hex(16)}@{self.owner}"
        ttl_ms = max(1, int(ttl * 1000))
        keys = (self.lock_key(key), self.fence_key(key))
        start = self.clock()
        replies = self.masters.broadcast(
            [("EVALSHA", self._acquire, 2, *keys, token, ttl_ms, self._retention_ms)]
        )
        fences = [r[0] for r in replies if not isinstance(r, Exception) and r[0] > 0]
        errors = {
            node.name: describe(r)
            for node, r in zip(self.masters.nodes, replies, strict=True)
            if isinstance(r, Exception)
        }
        valid_until = start + ttl - clock_drift(ttl)
        if len(fences) >= self.quorum and self.clock() < valid_until:
            fence = max(fences)
            if min(fences) == fence or self._raise_fence(key, fence):
                return Lease(
                    key, token, fence=fence, ttl=ttl, valid_until=valid_until, clock=self.clock
                )
        if fences or errors:
            self._release_everywhere(key, token)
        if len(self.masters.nodes) - len(errors) < self.quorum:
            raise QuorumUnavailable(key, self.quorum, len(self.masters.nodes), errors)
        if len(fences) >= self.quorum:
            logger.warning("lock %r: acquiring took longer than its ttl of %ss", key, ttl)
        return None

    def _raise_fence(self, key: str, fence: int) -> bool:
        replies = self.masters.broadcast(
            [("EVALSHA", self._raise, 1, self.fence_key(key), fence, self._retention_ms)]
        )
        return sum(not isinstance(r, Exception) for r in replies) >= self.quorum

    def _release_everywhere(self, key: str, token: str) -> int:
        replies = self.masters.broadcast([("EVALSHA", self._release, 1, self.lock_key(key), token)])
        return _count_ones(replies)

    def do_extend(self, lease: Lease, ttl: float) -> bool:
        start = self.clock()
        replies = self.masters.broadcast(
            [
                (
                    "EVALSHA",
                    self._extend,
                    1,
                    self.lock_key(lease.key),
                    lease.token,
                    max(1, int(ttl * 1000)),
                )
            ]
        )
        if _count_ones(replies) < self.quorum or self.clock() >= lease.valid_until:
            return False
        lease.valid_until = start + ttl - clock_drift(ttl)
        lease.ttl = ttl
        return True

    def release_nowait(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        self.masters.post([("EVALSHA", self._release, 1, self.lock_key(lease.key), lease.token)])

    def do_release(self, lease: Lease) -> bool:
        return self._release_everywhere(lease.key, lease.token) >= self.quorum

    def close(self) -> None:
        self.masters.close()

    def __repr__(self) -> str:
        nodes = ", ".join(node.safe_url for node in self.masters.nodes)
        return f"<Redlock [{nodes}] quorum={self.quorum}>"


def _count_ones(replies: list[list[Any] | Exception]) -> int:
    return sum(1 for r in replies if not isinstance(r, Exception) and r[0] == 1)

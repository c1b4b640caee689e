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
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from celery_singleton_beat.connections.masters import Masters, describe
from celery_singleton_beat.connections.resp import bulk, evalsha_head
from celery_singleton_beat.core import process
from celery_singleton_beat.core.schema import DEFAULT_PREFIX, Keys
from celery_singleton_beat.errors import LockError, QuorumUnavailable
from celery_singleton_beat.locks.base import Clock, Lease, LockBackend, check_ttl
from celery_singleton_beat.settings import defaults
from celery_singleton_beat.settings.urls import RedisOptions

logger = logging.getLogger(__name__)

DEFAULT_NODE_TIMEOUT = defaults.NODE_TIMEOUT
DEFAULT_FENCE_RETENTION = defaults.LOCK_FENCE_RETENTION

#: Keys (and TTLs) whose RESP encoding a Redlock keeps; past that many it starts over.
ENCODINGS_KEPT = 512


def clock_drift(ttl: float) -> float:
    """Allowance for clocks running at different rates on the masters during ``ttl``."""
    return ttl * 0.01 + 0.002


def default_owner() -> str:
    """``host/pid`` of this process; a lock token is 128 random bits, ``@``, the owner."""
    return process.owner()


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

    # KEYS[1], KEYS[2] a mark's lock key and fence counter; KEYS[3], KEYS[4] a lock's
    # ARGV[1..3] the mark's token, ttl in ms, counter retention in ms (0: keep);
    # ARGV[4..6] the same for the lock
    # -> {mark fence or 0, lock fence or 0, 1 if the lock was held with its token already}:
    # the lock is tried only where the mark is granted
    ACQUIRE_PAIR = """
    local function take(key, counter, token, ttl, retention)
      local current = redis.call('GET', key)
      if current and current ~= token then return 0, 0 end
      redis.call('SET', key, token, 'PX', ttl)
      local fence = redis.call('INCR', counter)
      if tonumber(retention) > 0 then redis.call('PEXPIRE', counter, retention) end
      return fence, current and 1 or 0
    end
    local mark = take(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
    if mark == 0 then return {0, 0, 0} end
    local fence, held = take(KEYS[3], KEYS[4], ARGV[4], ARGV[5], ARGV[6])
    return {mark, fence, held}
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
        self._schema = Keys(prefix, hash_tags=masters.clustered)
        if fence_retention is not None:
            fence_retention = check_ttl(fence_retention, "fence_retention")
        retention = fence_retention or 0.0
        self._retention_ms = int(retention * 1000)
        self._retention_arg = bulk(b"%d" % self._retention_ms)
        self.owner = owner or default_owner()
        self._acquire = masters.script(self.ACQUIRE)
        self._raise = masters.script(self.RAISE_FENCE)
        self._extend = masters.script(self.EXTEND)
        self._release = masters.script(self.RELEASE)
        self._acquire_pair = masters.script(self.ACQUIRE_PAIR)
        # the hot calls in RESP form: their start, and the keys and TTLs in use, encoded once
        self._acquire_head = evalsha_head(self._acquire, 2, 3)
        self._pair_head = evalsha_head(self._acquire_pair, 4, 6)
        self._extend_head = evalsha_head(self._extend, 1, 2)
        self._release_head = evalsha_head(self._release, 1, 1)
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._ttls: dict[float, bytes] = {}

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
        transport_options: Mapping[str, Any] | None = None,
        use_ssl: Any = None,
        min_replicas: int | str = "auto",
    ) -> Redlock:
        """A Redlock over the masters at ``urls`` (a list, or one comma-separated string).

        ``node_timeout`` bounds how long one master may take to answer; keep it far below
        the TTLs you use. A master may be a Sentinel-managed primary
        (``sentinel://h1:26379;sentinel://h2:26379/0``, with ``master_name`` in
        ``transport_options`` as in Celery's ``broker_transport_options``); ``use_ssl``
        is TLS as Celery's ``broker_use_ssl``. A lock counts on a primary once
        ``min_replicas`` of its replicas acknowledged it (``"auto"``: as many as the
        primary reports). Raises :class:`~celery_singleton_beat.errors.ConfigurationError`
        for an empty list, a malformed URL or a master given twice.
        """
        masters = Masters.from_urls(
            urls, node_timeout, options=RedisOptions(transport_options or {}, use_ssl),
            min_replicas=min_replicas,
        )  # fmt: skip
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
        return self._schema.lock(key)

    def fence_key(self, key: str) -> str:
        return self._schema.fence(key)

    def holder(self, key: str) -> str | None:
        """The token most masters hold ``key`` with, or None when free on a majority."""
        replies = self.masters.broadcast([("GET", self.lock_key(key))])
        values = [r[0] for r in replies if not isinstance(r, Exception) and r[0] is not None]
        if not values:
            return None
        top = max(set(values), key=values.count)
        return top.decode() if isinstance(top, bytes) else str(top)

    def do_acquire(self, key: str, ttl: float, token: str | None = None) -> Lease | None:
        token = token or self._new_token()
        lock, fence = self._keys.get(key) or self._encoded_key(key)
        encoded = token.encode()
        command = b"".join(
            (self._acquire_head, lock, fence, b"$%d\r\n%s\r\n" % (len(encoded), encoded),
             self._ttls.get(ttl) or self._encoded_ttl(ttl), self._retention_arg)
        )  # fmt: skip
        clock, masters = self.clock, self.masters
        if masters.clustered:
            masters.ready()
        start = clock()
        replies = masters.broadcast([command], durable=True)
        fences = []
        errors = {}
        for node, reply in zip(masters.nodes, replies):  # noqa: B905  (see Masters.exchange)
            if isinstance(reply, list):
                if reply[0] > 0:
                    fences.append(reply[0])
            else:
                errors[node.name] = describe(reply)
        valid_until = start + ttl - clock_drift(ttl)
        if len(fences) >= masters.quorum and clock() < valid_until:
            fence = max(fences)
            if min(fences) == fence or self._raise_fence(key, fence):
                return Lease(key, token, fence=fence, ttl=ttl, valid_until=valid_until, clock=clock)
        if fences or errors:
            self._release_everywhere(key, token)
        if len(self.masters.nodes) - len(errors) < self.quorum:
            raise QuorumUnavailable(key, self.quorum, len(self.masters.nodes), errors)
        if len(fences) >= self.quorum:
            logger.warning("lock %r: acquiring took longer than its ttl of %ss", key, ttl)
        return None

    def acquire_marked(
        self, key: str, ttl: float, *, token: str, marks: LockBackend, mark: str, mark_ttl: float
    ) -> MarkedLease:
        """Take the mark ``mark`` on ``marks``, then ``key``, in one round trip where both
        live on the same masters (on a Redis Cluster: in the same hash slot). A mark held
        on a majority is refused at once; a split vote is tried again for up to a second.

        The same outcome as :func:`take_mark` followed, when the mark was granted, by
        ``self.acquire(key, ttl, token=token)``, which is what happens when ``marks`` is
        another store, or another hash slot of a cluster. A beat slot's "ran" mark and the
        task's lock are such a pair: a slot-aware message costs one round trip, not two.
        Each master takes the lock only where it grants the mark, so a copy whose mark is
        held on a majority leaves the lock untouched. When the mark is granted but the lock
        is not on a majority (the lock was skipped on a master that refused the mark, or is
        held), a plain acquire of the lock decides, with the same token.

        Raises :class:`~celery_singleton_beat.errors.LockError` when the mark cannot be
        decided; a lock that cannot be decided once the mark is ours is returned as
        ``error``.
        """
        if (
            not isinstance(marks, Redlock)
            or marks.masters is not self.masters
            or not self.masters.one_slot(marks.lock_key(mark), self.lock_key(key))
        ):
            return marked_in_turn(
                self, key, ttl, token=token, marks=marks, mark=mark, mark_ttl=mark_ttl
            )
        mark_ttl, ttl = check_ttl(mark_ttl, "mark_ttl"), check_ttl(ttl)
        deadline = self.clock() + 1.0
        while True:
            try:
                marked, lease, held = self._try_pair(key, ttl, token, marks, mark, mark_ttl)
            except LockError:
                if self.clock() >= deadline:
                    raise
                marked = lease = None
                held = False
            if marked is not None or held or self.clock() >= deadline:
                break
            pause = random.uniform(self.retry_delay / 4, self.retry_delay)
            time.sleep(max(0.0, min(pause, deadline - self.clock())))
        if marked is None or lease is not None:
            return MarkedLease(marked, lease, None)
        try:
            return MarkedLease(marked, self.acquire(key, ttl, token=token), None)
        except LockError as exc:
            return MarkedLease(marked, None, exc)

    def _try_pair(  # noqa: PLR0917  (private; the arguments of acquire_marked, in order)
        self, key: str, ttl: float, token: str, marks: Redlock, mark: str, mark_ttl: float
    ) -> tuple[Lease | None, Lease | None, bool]:
        """One attempt of :meth:`acquire_marked`: (mark lease, lock lease), each or None,
        and whether the mark is held by another on a majority (no use trying again)."""
        mark_token = marks._new_token()
        keys = (
            marks.lock_key(mark),
            marks.fence_key(mark),
            self.lock_key(key),
            self.fence_key(key),
        )
        command = b"".join(
            (self._pair_head, *marks._encoded_key(mark), *self._encoded_key(key),
             bulk(mark_token.encode()), marks._encoded_ttl(mark_ttl), marks._retention_arg,
             bulk(token.encode()), self._encoded_ttl(ttl), self._retention_arg)
        )  # fmt: skip
        if self.masters.clustered:
            self.masters.ready()
        start = self.clock()
        replies = self.masters.broadcast([command], durable=True)
        pairs = [r[0] for r in replies if not isinstance(r, Exception)]
        marked = marks._granted(mark, mark_token, [p[0] for p in pairs], start, mark_ttl)
        if marked is None:
            self._undo_pair(replies, (keys[0], mark_token), (keys[2], token))
            if len(pairs) < self.quorum:
                failures = {
                    node.name: describe(r)
                    for node, r in zip(self.masters.nodes, replies, strict=True)
                    if isinstance(r, Exception)
                }
                raise QuorumUnavailable(mark, self.quorum, len(self.masters.nodes), failures)
            return None, None, sum(1 for p in pairs if p[0] == 0) >= self.quorum
        return marked, self._granted(key, token, [p[1] for p in pairs], start, ttl), False

    def _undo_pair(
        self, replies: list[list[Any] | Exception], mark: tuple[str, str], lock: tuple[str, str]
    ) -> None:
        """Release a refused pair where this attempt took it: the mark where granted, the
        lock where granted and not held with the token before; both where no reply came."""
        batches: list[list[tuple[Any, ...]]] = []
        for reply in replies:
            granted, fence, held = (1, 1, 0) if isinstance(reply, Exception) else reply[0]
            batch = [("EVALSHA", self._release, 1, *mark)] if granted else []
            if fence and not held:
                batch.append(("EVALSHA", self._release, 1, *lock))
            batches.append(batch)
        if any(batches):
            self.masters.scatter(batches)

    def _granted(
        self, key: str, token: str, fences: list[int], start: float, ttl: float
    ) -> Lease | None:
        """The lease when a majority granted ``key`` in time (and their counters agree or
        could be raised), else None; grants short of that are left to the caller."""
        fences = [f for f in fences if f > 0]
        valid_until = start + ttl - clock_drift(ttl)
        if len(fences) < self.quorum or self.clock() >= valid_until:
            return None
        fence = max(fences)
        if min(fences) != fence and not self._raise_fence(key, fence):
            return None
        return Lease(key, token, fence=fence, ttl=ttl, valid_until=valid_until, clock=self.clock)

    def _raise_fence(self, key: str, fence: int) -> bool:
        replies = self.masters.broadcast(
            [("EVALSHA", self._raise, 1, self.fence_key(key), fence, self._retention_ms)],
            durable=True,
        )
        return sum(not isinstance(r, Exception) for r in replies) >= self.quorum

    def _new_token(self) -> str:
        """128 random bits (as ``secrets.token_hex``), ``@``, the owner."""
        return f"{os.urandom(16).hex()}@{self.owner}"

    def _encoded_key(self, key: str) -> tuple[bytes, bytes]:
        """``key``'s lock key and fence counter as RESP bulk strings."""
        encoded = self._keys.get(key)
        if encoded is None:
            if len(self._keys) >= ENCODINGS_KEPT:
                self._keys.clear()
            encoded = (bulk(self.lock_key(key).encode()), bulk(self.fence_key(key).encode()))
            self._keys[key] = encoded
        return encoded

    def _encoded_ttl(self, ttl: float) -> bytes:
        """``ttl`` in milliseconds (at least 1) as a RESP bulk string."""
        encoded = self._ttls.get(ttl)
        if encoded is None:
            if len(self._ttls) >= ENCODINGS_KEPT:
                self._ttls.clear()
            encoded = self._ttls[ttl] = bulk(b"%d" % max(1, int(ttl * 1000)))
        return encoded

    def _release_command(self, key: str, token: str) -> bytes:
        lock = (self._keys.get(key) or self._encoded_key(key))[0]
        encoded = token.encode()
        return b"".join((self._release_head, lock, b"$%d\r\n%s\r\n" % (len(encoded), encoded)))

    def _release_everywhere(self, key: str, token: str) -> int:
        return _count_ones(self.masters.broadcast([self._release_command(key, token)]))

    def do_extend(self, lease: Lease, ttl: float) -> bool:
        command = b"".join(
            (self._extend_head, self._encoded_key(lease.key)[0], bulk(lease.token.encode()),
             self._encoded_ttl(ttl))
        )  # fmt: skip
        if self.masters.clustered:
            self.masters.ready()
        start = self.clock()
        replies = self.masters.broadcast([command], durable=True)
        if _count_ones(replies) < self.quorum or self.clock() >= lease.valid_until:
            return False
        lease.valid_until = start + ttl - clock_drift(ttl)
        lease.ttl = ttl
        return True

    def release_nowait(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        self.masters.post([self._release_command(lease.key, lease.token)])

    def do_release(self, lease: Lease) -> bool:
        return self._release_everywhere(lease.key, lease.token) >= self.quorum

    def close(self) -> None:
        self.masters.close()

    def __repr__(self) -> str:
        nodes = ", ".join(node.label for node in self.masters.nodes)
        return f"<Redlock [{nodes}] quorum={self.quorum}>"


class MarkedLease(NamedTuple):
    """What :meth:`Redlock.acquire_marked` got: the mark's lease (None: held elsewhere, the
    lock untried), the lock's lease (None: held by another) and the lock's error, if any."""

    mark: Lease | None
    lease: Lease | None
    error: LockError | None


def marked_in_turn(
    locks: LockBackend, key: str, ttl: float, *, token: str, marks: LockBackend, mark: str,
    mark_ttl: float,
) -> MarkedLease:  # fmt: skip
    """:meth:`Redlock.acquire_marked` for any two stores: the mark, then the lock (two
    round trips)."""
    marked, _holder = take_mark(marks, mark, mark_ttl)
    if marked is None:
        return MarkedLease(None, None, None)
    try:
        return MarkedLease(marked, locks.acquire(key, ttl=ttl, token=token), None)
    except LockError as exc:
        return MarkedLease(marked, None, exc)


class TakenMark(NamedTuple):
    """What :func:`take_mark` got: the mark's lease, or who holds it (when known)."""

    lease: Lease | None
    holder: str | None


def take_mark(marks: LockBackend, mark: str, ttl: float) -> TakenMark:
    """Take a mark that is never released (a slot's "ran" mark): (the lease, None), or
    (None, its holder) at once, without waiting, when someone holds it, since its holder
    will not let it go. Only a mark nobody holds that still was not granted (a split vote
    between racing copies) is tried again, for up to a second."""
    try:
        marked = marks.acquire(mark, ttl=ttl)
        if marked is not None:
            return TakenMark(marked, None)
        holder = marks.holder(mark)
    except LockError:  # no answer from a majority just now: try again, as for a split vote
        holder = None
    if holder is None:
        marked = marks.acquire(mark, ttl=ttl, wait=1.0)
    return TakenMark(marked, holder)


def _count_ones(replies: list[list[Any] | Exception]) -> int:
    return [r[0] if type(r) is list else 0 for r in replies].count(1)

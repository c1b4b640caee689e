"""The lock contract every backend follows.

A backend hands out :class:`Lease` objects. A lease is valid until ``remaining()``
reaches zero; after that another owner may hold the key, so the holder must stop doing
work guarded by the lock. Each lease carries a *fencing token*: an integer that strictly
increases across grants of the same key, for resources that can reject writes from an
older holder.
"""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Callable
from typing import NamedTuple, overload

from celery_singleton_beat.errors import ConfigurationError, LockError
from celery_singleton_beat.settings.validate import positive_seconds

Clock = Callable[[], float]


class Lease:
    """One grant of a lock: who holds which key, until when.

    ``lost`` turns true when the owner learns that the lease can no longer be relied on
    (an extension failed); the task or scheduler holding it should stop writing.
    """

    __slots__ = ("_clock", "fence", "key", "lost", "released", "token", "ttl", "valid_until")

    def __init__(
        self, key: str, token: str, *, fence: int, ttl: float, valid_until: float, clock: Clock
    ) -> None:
        self.key = key
        self.token = token
        self.fence = fence
        self.ttl = ttl
        self.valid_until = valid_until
        self.lost = False
        self.released = False
        self._clock = clock

    def clock_now(self) -> float:
        """The lease's clock (monotonic seconds)."""
        return self._clock()

    def remaining(self) -> float:
        """Seconds the lease is still guaranteed to be ours (never negative)."""
        if self.released or self.lost:
            return 0.0
        return max(0.0, self.valid_until - self._clock())

    def __repr__(self) -> str:
        return (
            f"<Lease key={self.key!r} fence={self.fence} remaining={self.remaining():.3f}s"
            f"{' lost' if self.lost else ''}>"
        )


@overload
def holder_name(token: str) -> str: ...
@overload
def holder_name(token: str | None) -> str | None: ...
def holder_name(token: str | None) -> str | None:
    """Who holds a lock, as logs, events and the CLI name it: the owner part of its token
    (``host/pid``, and a task's id after it), or ``"?"`` for a token without one.

    The rest of the token (128 random bits) is what lets its holder release or extend the
    lock: it is never written to a log line, an event or a record.
    """
    if token is None:
        return None
    return token.partition("@")[2] or "?"


class HeldLock(NamedTuple):
    """A lock as an operator sees it: key, token, seconds left (None: unknown), fence."""

    key: str
    token: str
    remaining: float | None
    fence: int | None


def check_ttl(ttl: float, name: str = "ttl") -> float:
    """Refuse a TTL that is not a positive number of seconds (ConfigurationError)."""
    return positive_seconds(name, ttl)


def check_wait(wait: float) -> float:
    """Refuse a wait that is negative or not a number (ConfigurationError)."""
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
        raise ConfigurationError("wait", wait, "a number of seconds >= 0")
    return float(wait)


class LockBackend(abc.ABC):
    """A lock store: acquire, extend and release leases on string keys.

    The public methods validate their arguments and implement waiting; a backend
    implements the single-attempt ``do_*`` methods.

    - ``acquire(key, ttl, wait)`` returns a :class:`Lease`, or ``None`` when the key is
      still held by someone else once ``wait`` seconds have passed. It raises
      :class:`~celery_singleton_beat.errors.LockError` (for Redlock,
      :class:`~celery_singleton_beat.errors.QuorumUnavailable`) when the store cannot
      decide, so that "held by another" and "store unreachable" stay distinguishable.
      A failed attempt leaves nothing locked.
    - ``extend(lease, ttl)`` makes the lease valid for ``ttl`` more seconds and returns
      ``True``, or returns ``False`` when the lease has expired or is no longer ours. It
      never re-creates an expired key.
    - ``release(lease)`` frees the key and returns ``True`` when it was still ours.
    """

    def __init__(self, *, retry_delay: float = 0.05, clock: Clock = time.monotonic) -> None:
        #: Upper bound, in seconds, of the random pause between two attempts while waiting.
        self.retry_delay = check_ttl(retry_delay, "retry_delay")
        #: Monotonic clock in seconds; tests inject their own.
        self.clock = clock

    def acquire(
        self, key: str, ttl: float, wait: float = 0.0, token: str | None = None
    ) -> Lease | None:
        """Take ``key`` for ``ttl`` seconds, trying for up to ``wait`` seconds.

        ``token`` (optional) is the value to hold the key with. An owner that presents the
        token the key is held with now gets the key again: this hands a lock over to a
        known successor, such as the retry of a task that kept its lock.
        """
        if type(ttl) is not float or not ttl > 0:  # a float above 0 needs no other check
            ttl = check_ttl(ttl)
        if wait == 0 and type(wait) in (float, int):  # one attempt: a task's lock, a slot
            return self.do_acquire(key, ttl, token)
        deadline = self.clock() + check_wait(wait)
        while True:
            try:
                lease = self.do_acquire(key, ttl, token)
            except LockError:
                if self.clock() >= deadline:
                    raise
                lease = None
            if lease is not None or self.clock() >= deadline:
                return lease
            pause = random.uniform(self.retry_delay / 4, self.retry_delay)
            time.sleep(max(0.0, min(pause, deadline - self.clock())))

    def extend(self, lease: Lease, ttl: float | None = None) -> bool:
        """Keep ``lease`` for ``ttl`` more seconds (default: its own TTL)."""
        ttl = lease.ttl if ttl is None else check_ttl(ttl)
        if lease.released or lease.lost or lease.remaining() <= 0:
            return False
        return self.do_extend(lease, ttl)

    def release(self, lease: Lease) -> bool:
        """Free ``lease``'s key; ``True`` when it was still ours."""
        if lease.released:
            return False
        still_valid = lease.remaining() > 0
        lease.released = True
        return self.do_release(lease) and still_valid

    def release_nowait(self, lease: Lease) -> None:
        """Free ``lease``'s key without waiting to learn whether it was still ours.

        For owners that do nothing with the answer (a task that has finished): backends
        with a network round trip send the release and move on.
        """
        self.release(lease)

    def close(self) -> None:  # noqa: B027  (optional hook: backends without connections skip it)
        """Free connections; the backend is not used afterwards."""

    def holder(self, key: str) -> str | None:
        """The token ``key`` is held with now (``random@host/pid``), or None when free."""
        return None

    def held(self) -> list[HeldLock] | None:
        """Every key held now, for operators; None when the backend cannot list them."""
        return None

    def describe(self) -> str:
        """Where the locks are, in words, for operators (no passwords): the ``locks``
        command's store column."""
        return type(self).__name__

    @abc.abstractmethod
    def do_acquire(self, key: str, ttl: float, token: str | None = None) -> Lease | None:
        """One attempt: a lease, ``None`` when held by another, or raise ``LockError``."""

    @abc.abstractmethod
    def do_extend(self, lease: Lease, ttl: float) -> bool:
        """One attempt to extend; ``False`` when the lease is not ours any more."""

    @abc.abstractmethod
    def do_release(self, lease: Lease) -> bool:
        """Delete the key if it still holds ``lease``'s token."""

    def __enter__(self) -> LockBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

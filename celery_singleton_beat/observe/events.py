"""Typed events emitted by the scheduler and by singleton tasks, and their subscribers.

Recorders (logging, Prometheus metrics, the Django app) subscribe with
:func:`subscribe`. Emitting never fails the caller: a subscriber that raises is logged
(once per subscriber and error type) and the others still receive the event.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery_singleton_beat.core.slots import Slots

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of every event; ``at`` is when it happened (UTC)."""

    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc), kw_only=True)


@dataclass(frozen=True)
class SlotFired(Event):
    """A replica published the message for a slot."""

    entry: str
    slot: dt.datetime
    task_id: str
    task: str
    replica: str
    late: float
    """Seconds between the slot's time and the publish."""
    coalesced: int = 0
    """Missed slots that this run stands for (misfire policy ``coalesce``)."""


@dataclass(frozen=True)
class SlotSkipped(Event):
    """Slots that no replica will publish, and why (``misfire``, ``publish_failed``)."""

    entry: str
    slot: dt.datetime
    """The newest of the skipped slots."""
    count: int
    reason: str
    replica: str
    detail: str = ""
    """What went wrong (``publish_failed``: the broker's error)."""


@dataclass(frozen=True)
class EntryScheduled(Event):
    """The slots a replica schedules for an entry from ``since`` on: at start, when the
    entry is added or its schedule changes, and (``slots`` None) when it leaves the
    schedule. Every replica reports what it sees, so one version may come several times;
    the slots up to ``since`` belong to the entry's previous version."""

    entry: str
    since: dt.datetime
    slots: Slots | None
    replica: str


@dataclass(frozen=True)
class ReplicaSeen(Event):
    """A beat replica's heartbeat: who it is and what it does."""

    host: str
    pid: int
    mode: str
    role: str
    ready: bool
    replicas: int = 0
    """Replicas with a live heartbeat, this one included."""
    paused: int = 0
    """Entries this replica holds paused (a pause of any source, or ``"paused"`` in an
    entry's settings)."""


@dataclass(frozen=True)
class QuorumChanged(Event):
    """A replica found a majority of masters reachable again, or lost it."""

    replica: str
    reachable: bool
    detail: str


@dataclass(frozen=True)
class EntryConflict(Event):
    """Two schedule sources give entry ``entry``: the copy of ``left_out`` is not scheduled
    (``gone``: they no longer both do)."""

    entry: str
    kept: str
    left_out: str
    gone: bool = False


@dataclass(frozen=True)
class LockAttempt(Event):
    """One try to take a task's lock: ``acquired``, ``held`` (by another) or ``error``."""

    task: str
    key: str
    backend: str
    outcome: str
    seconds: float


@dataclass(frozen=True)
class LeaderChanged(Event):
    """This replica became the leader (``leader=True``) or stepped down."""

    replica: str
    leader: bool
    reason: str


@dataclass(frozen=True)
class RunStarted(Event):
    """A singleton task got its lock and starts running."""

    task: str
    task_id: str
    key: str
    fence: int | None
    """None when the task runs without a lock (``fail_open``)."""
    lock_wait: float
    worker: str
    retries: int = 0
    entry: str | None = None
    slot: str | None = None


@dataclass(frozen=True)
class RunFinished(Event):
    """A singleton task's run ended: ``success``, ``failure``, ``retry`` or ``lock_lost``."""

    task: str
    task_id: str
    key: str
    status: str
    runtime: float
    lock_wait: float
    worker: str
    retries: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RunSkipped(Event):
    """A message that did not run: ``skipped_duplicate`` or ``skipped_lock_error``."""

    task: str
    task_id: str
    key: str
    reason: str
    holder: str | None
    """Who holds the lock (``host/pid``) or which task already ran the slot, when known."""
    worker: str
    retries: int = 0
    entry: str | None = None
    slot: str | None = None


@dataclass(frozen=True)
class LockLost(Event):
    """A running singleton task's lock could not be extended: it is no longer exclusive."""

    task: str
    task_id: str
    key: str
    fence: int
    worker: str


Subscriber = Callable[[Event], object]

_subscribers: list[Subscriber] = []
_mutex = threading.Lock()
_reported: set[tuple[int, type[BaseException]]] = set()


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Call ``subscriber(event)`` for every event from now on; returns an unsubscribe."""
    with _mutex:
        _subscribers.append(subscriber)

    def unsubscribe() -> None:
        with _mutex:
            if subscriber in _subscribers:
                _subscribers.remove(subscriber)

    return unsubscribe


def wanted() -> bool:
    """Whether anyone subscribed: hot paths skip building events nobody reads."""
    return bool(_subscribers)


def emit(event: Event) -> None:
    """Hand ``event`` to every subscriber; a failing subscriber never fails the caller."""
    for subscriber in list(_subscribers):
        try:
            subscriber(event)
        except Exception as exc:
            key = (id(subscriber), type(exc))
            if key not in _reported:
                _reported.add(key)
                logger.exception("event subscriber %r failed on %s", subscriber, event)

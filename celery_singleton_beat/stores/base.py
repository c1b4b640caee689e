"""The slot-store contract: where beat replicas keep the schedule's shared state.

Every replica of one deployment runs the same schedule against one store. The store holds,
for each entry, its *progress* (the newest slot handled, counts) and, for an interval
entry, the *anchor* its slots are counted from; for each slot, a *fence* that at most one
replica holds at a time and that says, once decided, how the slot was decided; and each
replica's *heartbeat*.

A slot goes through its fence like this::

    absent ── claim ──> claimed by T until E ── finish(T) ──> done:{outcome}
                           │        │  extend(T): E moves on      (kept for the retention)
                           │        └─ unclaim(T) ──> absent
                           └─ E passed: claim by U ──> claimed by U, *taken over*

A claim that expired is not forgotten: the fence keeps it (for the fence retention), so
whoever claims the slot next learns it was *taken over* and knows the first claimant may
have sent the message already. It sends it again with the same task id (the worker drops
a second copy) rather than counting the slot as missed::

    replica A: claim fire:e:t ── publish ── (SIGKILL before finish)
    replica B: claim: held ... held ... (A's claim expires) ... taken over ── publish again

Expiry is measured on the store's own clock (the master's, the database's), never on a
replica's, so replicas with skewed clocks agree on who holds a slot.

Every method that takes a sequence handles the whole sequence in one round trip (one
pipeline to every master, one transaction in the database): a minute with ten thousand
due slots costs a handful of round trips, not ten thousand.

Times: slots and ``now`` in integer milliseconds since the epoch (the replica's wall
clock, which names slots); TTLs and retentions in seconds.

Implementations: :mod:`celery_singleton_beat.stores.memory` (one process, for tests),
:mod:`celery_singleton_beat.stores.redis` (a majority of Redis masters) and
``django_celery_singleton_beat.stores`` (the Django database). All pass the one contract
suite in ``tests/stores/test_contract.py``.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from celery_singleton_beat.core.schema import ClaimStatus, Outcome
from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.locks.base import LockBackend
from celery_singleton_beat.settings.urls import MasterURL

__all__ = [
    "Claim",
    "ClaimStatus",
    "DocumentStore",
    "EntryState",
    "Fences",
    "Outcome",
    "ReplicaRegistry",
    "RunStates",
    "ScheduleChanges",
    "SlotOutcome",
    "SlotStore",
    "StoredSchedule",
]

Fence = tuple[str, int]
"""One slot of one entry: (entry name, slot in ms)."""


class EntryState(NamedTuple):
    """An entry's shared progress as :meth:`SlotStore.init` returns it."""

    last: int
    """The newest slot handled (ms); a new entry starts at the ``now`` it was first seen."""
    anchor: int | None
    """The anchor of an interval entry's slots (ms), None for other entries."""


@dataclasses.dataclass
class Claim:
    """What the store said about one slot's fence."""

    status: ClaimStatus | None
    """CLAIMED (this replica decides the slot), HELD (another replica holds a live claim,
    or the masters' vote was split), DONE (decided already), or None when the store could
    not answer (no majority of masters)."""
    last: int
    """The entry's newest handled slot (ms), as the store knows it now."""
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    """Each part of the store that did not answer (``host:port``) and its error."""
    taken_over: bool = False
    """Claimed after another claimant's claim on it expired: the slot may have been sent."""


class SlotOutcome(NamedTuple):
    """How a claimed slot was decided, for :meth:`SlotStore.finish`."""

    entry: str
    slot: int
    outcome: str
    """An :class:`~celery_singleton_beat.core.schema.Outcome` value."""
    sent: int
    """Messages published for it (0 or 1): added to the entry's ``dispatched`` count."""
    skipped: int
    """Slots it stands for that did not run: added to the entry's ``skipped`` count."""


class StoredSchedule(NamedTuple):
    """The runtime schedule as :meth:`DocumentStore.read_schedule` returns it."""

    revision: int
    """The newest revision (0: never written)."""
    doc: dict[str, Any]
    """Its document (a JSON-ready dict; ``{}`` when none)."""


class Fences(abc.ABC):
    """Each slot's fence and each entry's progress: what dispatching claims, extends and
    marks done (see the module docstring for a fence's life)."""

    #: What the store is, for log lines and errors ("3 Redis masters", "database 'default'").
    name: str = "slot store"

    @abc.abstractmethod
    def init(self, entries: Sequence[tuple[str, int | None]], now: int) -> list[EntryState]:
        """Register entries, given as (name, interval in ms or None), and read their state.

        - An entry the store knows keeps its ``last`` slot. (Redis: the maximum over the
          masters that know it; a master that restarted empty does not know it and gets
          *no vote*: it must not invent a ``last`` of ``now``. It learns the agreed value
          back.)
        - An entry nobody knows is new: it starts at ``now`` and stays there for later
          callers (slots before its first sighting never fire).
        - An interval entry's anchor is proposed as ``now`` rounded down to a whole
          interval; the first anchor stored (the smallest, on several masters) wins and
          never changes, so replicas count the same slots.
        """

    @abc.abstractmethod
    def claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[Claim]:
        """Try to claim each slot for ``ttl`` seconds, in one round trip; one
        :class:`Claim` per fence, in order.

        A fence that is absent, or whose claim expired (on the store's clock), or that
        ``token`` holds already, is claimed; an expired claim of another token is *taken
        over* (``taken_over=True``). A live claim of another token is HELD; a decided
        fence is DONE. The claim is kept for ``retention`` seconds so an expired claim is
        still seen. ``last`` is the entry's newest handled slot.
        """

    @abc.abstractmethod
    def unclaim(self, fences: Sequence[Fence], token: str) -> None:
        """Give back the claims ``token`` holds on these fences, so that the next replica
        need not wait for their TTL. Another token's claim, or a decided fence, is left
        alone. Best effort: errors are not raised."""

    @abc.abstractmethod
    def extend(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[bool]:
        """Move the expiry of ``token``'s claims to ``ttl`` seconds from now (store
        clock); for each fence, True when it is still ``token``'s and was extended. A
        fence taken over by another token, or decided, gives False."""

    @abc.abstractmethod
    def finish(self, outcomes: Sequence[SlotOutcome], token: str, retention: float) -> list[bool]:
        """Mark decided slots done and advance their entries, *only where the claim is
        still ``token``'s*: for each outcome, in one round trip, the fence becomes
        ``done:{outcome}`` (kept for ``retention`` seconds), the entry's ``last`` rises to
        the slot (never falls) and its ``dispatched``/``skipped`` counts grow by ``sent``
        and ``skipped``. A fence done already, or claimed by another token since ours
        expired, is left alone and gives False (that token decides it).

        An absent fence (its claim was lost with a restarted store) is marked done.
        """

    @abc.abstractmethod
    def outcomes(self, fences: Sequence[Fence]) -> list[str | None]:
        """How each slot was decided (the outcome :meth:`finish` stored on its fence, an
        :class:`~celery_singleton_beat.core.schema.Outcome` value), None for a fence that
        is absent or only claimed; in order, in one round trip. Read only: a backfill
        tells a slot that was sent from one that was skipped. (Redis: the outcome any
        answering master holds, as :meth:`claim` counts a fence done on any of them.)"""

    @abc.abstractmethod
    def entry_counts(self, name: str) -> dict[str, int]:
        """An entry's progress as the CLI and the dashboard show it: ``last`` (ms),
        ``dispatched`` and ``skipped`` (counts); empty for an entry the store does not
        know."""

    def unavailable(self, what: str, errors: dict[str, str]) -> StoreUnavailable:
        """The error for claims that came back without an answer (``Claim.status`` None)."""
        detail = "; ".join(f"{part}: {error}" for part, error in errors.items())
        return StoreUnavailable(self.name, f"answer for {what}", detail or "no answer")


class ScheduleChanges(abc.ABC):
    """What a schedule that changes while beat runs leaves behind: when an entry was seen or
    left, and the anchors its next times are counted from."""

    @abc.abstractmethod
    def start_at(self, names: Sequence[str], slot: int) -> None:
        """Raise each entry's ``last`` to at least ``slot`` (never lower it): an entry added
        or changed while beat runs owes no slot before the moment it was seen."""

    @abc.abstractmethod
    def mark_gone(self, names: Sequence[str], now: int) -> None:
        """Note that entries left the schedule at ``now`` (ms): a replica starting before
        one comes back owes none of the slots that passed meanwhile."""

    @abc.abstractmethod
    def gone(self, names: Sequence[str]) -> list[int]:
        """When each entry last left the schedule (ms; 0: never or unknown), in order."""

    @abc.abstractmethod
    def anchors(self, entries: Sequence[tuple[str, int]]) -> list[int | None]:
        """The stored anchor of each (name, interval in ms), None where none is stored
        yet; read only (the dashboard and the control page show next times with it)."""


class DocumentStore(abc.ABC):
    """The runtime schedule's document and revision, the run-now requests sent, and the lock
    its editors take in turn."""

    #: The runtime schedule's revision read with the last heartbeat: (monotonic s, revision).
    _revision_seen: tuple[float, int] | None = None

    @abc.abstractmethod
    def schedule_revision(self) -> int:
        """The runtime schedule's newest revision (0: never written): the version every
        replica polls, so it must be cheap."""

    def recent_schedule_revision(self, within: float) -> int:
        """The runtime schedule's revision as read along with a heartbeat of this store in
        the last ``within`` seconds, else :meth:`schedule_revision` now: a replica that
        heartbeats and polls every second makes one round trip for both."""
        seen = self._revision_seen
        if seen is not None and time.monotonic() - seen[0] <= within:
            return seen[1]
        return self.schedule_revision()

    def seen_schedule_revision(self) -> int | None:
        """The revision read along with this store's last heartbeat (no round trip)."""
        return None if self._revision_seen is None else self._revision_seen[1]

    def saw_schedule_revision(self, revision: int) -> None:
        """For :meth:`heartbeat` implementations that read the revision in the same round
        trip."""
        self._revision_seen = (time.monotonic(), revision)

    @abc.abstractmethod
    def read_schedule(self) -> StoredSchedule:
        """The newest revision and its document (a JSON-ready dict; ``{}`` when none)."""

    @abc.abstractmethod
    def write_schedule(self, revision: int, doc: dict[str, Any]) -> bool:
        """Store ``doc`` as ``revision`` unless the stored revision is that or newer
        (True when written). Editors serialise on a lock of :meth:`leader_lock`'s backend
        (``schedule-edit``) and write the revision they read plus one."""

    @abc.abstractmethod
    def mark_runs_sent(self, run_ids: Sequence[str], retention: float) -> None:
        """Remember for ``retention`` seconds that these run-now requests were sent."""

    @abc.abstractmethod
    def runs_sent(self, run_ids: Sequence[str]) -> set[str]:
        """The ids among ``run_ids`` known to have been sent."""

    @abc.abstractmethod
    def leader_lock(self, owner: str) -> LockBackend:
        """A lock backend on the same store for the ``leader`` mode's lease and the
        runtime schedule's edit lock, so that a deployment needs no other server."""


class RunStates(abc.ABC):
    """Each entry's run state, which its overlap policy reads: the newest slot queued,
    started and finished, and the slots held back."""

    @abc.abstractmethod
    def run_states(self, entries: Sequence[str]) -> dict[str, dict[str, int]]:
        """Each entry's run state: the newest slot (ms) ``queued`` by beat, ``started`` and
        ``finished`` by a worker (0: none), and how many slots were ``overlapped``."""

    @abc.abstractmethod
    def raise_run_states(self, writes: Sequence[tuple[str, str, int]], retention: float) -> None:
        """Raise each (entry, field, slot) to at least the slot (never lower it); an
        entry's state is kept ``retention`` seconds after its last write."""

    @abc.abstractmethod
    def count_overlapped(self, entry: str, count: int) -> None:
        """Add ``count`` slots held back by the entry's overlap policy."""


class ReplicaRegistry(abc.ABC):
    """The replicas alive: their heartbeats, on the store's clock."""

    #: The replicas taking a share, read with the last heartbeat: (monotonic s, ids).
    _sharing_seen: tuple[float, list[str]] | None = None

    def sharing(self, within: float) -> list[str]:
        """The live replicas that take a share of the entries (``host:pid``, sorted): those
        whose heartbeat ``info`` says ``"share": true``. As read along with a heartbeat of
        this store in the last ``within`` seconds, else read now from :meth:`replicas`."""
        seen = self._sharing_seen
        if seen is not None and time.monotonic() - seen[0] <= within:
            return seen[1]
        ids = sorted(replica_id(r) for r in self.replicas() if r.get("share"))
        self.saw_sharing(ids)
        return ids

    def saw_sharing(self, replicas: list[str]) -> None:
        """For :meth:`heartbeat` implementations that read the sharing replicas in the same
        round trip."""
        self._sharing_seen = (time.monotonic(), sorted(replicas))

    @abc.abstractmethod
    def heartbeat(self, replica: str, info: dict[str, Any], ttl: float) -> int:
        """Record that ``replica`` is alive (with ``info``, a JSON-ready dict) for ``ttl``
        seconds on the store's clock (no replica's clock decides who counts as alive).
        Returns how many replicas have a live heartbeat, this one included. A store that
        can read the runtime schedule's revision in the same round trip passes it to
        :meth:`saw_schedule_revision`."""

    @abc.abstractmethod
    def replicas(self) -> list[dict[str, Any]]:
        """The ``info`` of every replica with a live heartbeat, sorted by host and pid, each
        with ``seen_ago``: the seconds since its last heartbeat, on the store's clock (no
        replica's clock, nor the reader's), or None when the store cannot tell (a heartbeat
        whose ``info`` names no ``ttl``; beat's always do)."""

    @abc.abstractmethod
    def forget_replica(self, replica: str) -> None:
        """Drop ``replica``'s heartbeat (it is shutting down). Best effort."""


class SlotStore(Fences, ScheduleChanges, DocumentStore, RunStates, ReplicaRegistry):
    """Shared schedule state: entries, anchors, slot fences and replica heartbeats.

    A store plays every role above; each part of the library that uses it is typed on the
    role it needs (the claim keeper on :class:`Fences`, the runtime schedule's document on
    :class:`DocumentStore`, ...), as APScheduler keeps its event broker apart from its
    data store.

    Subclasses implement every abstract method; each is safe to call from the
    scheduler's thread and, for :meth:`extend`, from its claim keeper's thread at once.
    A method that cannot reach the store raises
    :class:`~celery_singleton_beat.errors.StoreUnavailable`, except those that answer per
    slot: :meth:`claim` (status None), :meth:`extend` and :meth:`finish` (False: the
    claim expires and another replica takes the slot over), and the best-effort
    :meth:`unclaim` and :meth:`forget_replica`.
    """

    #: The log line's words when the store stops answering, and when it answers again.
    down_text: str = "the slot store does not answer"
    up_text: str = "the slot store answers"

    def describe(self) -> str:
        """One line for beat's start-up banner (no passwords)."""
        return self.name

    def servers(self) -> list[MasterURL]:
        """The Redis members the store runs on (their URLs as the settings read them), for
        operators to probe (the CLI's ``status`` and ``check``, the dashboard); none for
        a store on anything else."""
        return []

    def check(self) -> list[tuple[str, str]]:
        """What ``celery singleton-beat check`` reports about the store, as (level, text)
        pairs, level ``OK``, ``WARN`` or ``ERROR`` (an ERROR: beat cannot work on it as it
        is). By default, whether it answers; a store adds what it knows could be wrong
        (the database store: its tables not migrated)."""
        try:
            self.schedule_revision()
        except StoreUnavailable as exc:
            return [("ERROR", str(exc))]
        return [("OK", f"{self.name} answers")]

    def close(self) -> None:
        """Release connections. The store is not used afterwards."""


def replica_id(info: Mapping[str, Any]) -> str:
    """A replica's id (``host:pid``) from its heartbeat ``info``."""
    return f"{info['host']}:{info['pid']}"

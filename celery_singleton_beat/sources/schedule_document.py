"""Where runtime schedule entries are kept: one JSON document in the slot store.

The document is ``{"entries": {name: spec}, "runs": {run id: run}, "paused": {name: who and
when}, "backfills": {backfill id: request}}``, with a revision that replicas poll (see
:meth:`~celery_singleton_beat.stores.base.DocumentStore.schedule_revision`); on
Redis masters it lives under ``schedule:doc`` and ``schedule:rev``, in the database in the
Django app's ``RuntimeSchedule`` table. Every storage call of the runtime schedule goes
through :class:`ScheduleDocument`.

An edit takes the ``schedule-edit`` lock of the store, reads the newest revision, changes
it and writes revision + 1 ("set if newer"): two editors never lose each other's change,
and on Redis a master that missed an edit (down, restarted empty) is outvoted on read and
brought up to date by the next edit::

    editor A: lock ── read rev 7 ── write rev 8 (add "report") ── unlock
    editor B:   lock (waits) ........................ read rev 8 ── write rev 9 (pause)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from celery.schedules import crontab

from celery_singleton_beat.core.entries import OPTION
from celery_singleton_beat.core.schema import SCHEDULE_EDIT_LOCK
from celery_singleton_beat.errors import ConfigurationError, LockHeld
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.stores.base import DocumentStore, StoredSchedule

if TYPE_CHECKING:
    from celery import Celery

T = TypeVar("T")
#: Run-now records are dropped from the document this long after their time (ms).
RUN_NOW_KEPT_MS = 3_600_000
RUN_NOW = "@run-now:"
#: A backfilled slot's own fence is on entry ``{name}@backfill`` (see :func:`released`).
BACKFILL = "@backfill"
#: A backfill is worked on this long past the pacing of its last slot, then dropped (ms).
BACKFILL_KEPT_MS = 3_600_000
#: The outcome on a backfill fence of a slot that had run already (nothing sent).
HAD_RUN = "had_run"
#: How long an edit may hold the edit lock, and wait for it (s).
EDIT_TTL = 5.0
EDIT_WAIT = 5.0
#: The fields of a runtime entry that are per-entry settings (``options["singleton_beat"]``).
POLICY_FIELDS = (
    "timezone",
    "misfire",
    "start_time",
    "end_time",
    "jitter",
    "slot_kwarg",
    "pause_on_failure",
)


class ScheduleDocument:
    """The runtime schedule document in a slot store."""

    def __init__(self, store: DocumentStore, close: Callable[[], None] | None = None) -> None:
        self.store = store
        self._close = close
        """What :meth:`close` calls: the slot store's own ``close`` when it was made for this
        object alone."""

    @classmethod
    def for_app(cls, app: Celery, timeout: float | None = None) -> ScheduleDocument:
        """The runtime schedule in the slot store ``app``'s settings name, connected for
        this object; ``timeout`` per Redis master (default: ``singleton_beat_node_timeout``)."""
        store = Runtime.of(app).open_store(timeout)
        return cls(store, store.close)

    @classmethod
    def shared(cls, app: Celery) -> ScheduleDocument:
        """The runtime schedule in the app's own slot store (:class:`Runtime`), the one
        beat heartbeats through: polling its revision right after a heartbeat costs no
        round trip of its own."""
        return cls(Runtime.of(app).store)

    def revision(self) -> int:
        """The newest revision (0: never edited); as read with this store's heartbeat when
        one was made within the last second (beat heartbeats every second)."""
        return self.store.recent_schedule_revision(1.0)

    def seen(self) -> int | None:
        """The revision read along with the last heartbeat, if any (no round trip)."""
        return self.store.seen_schedule_revision()

    def read(self) -> StoredSchedule:
        """The newest revision and its document."""
        rev, doc = self.store.read_schedule()
        doc.setdefault("entries", {})
        doc.setdefault("runs", {})
        doc.setdefault("paused", {})
        doc.setdefault("backfills", {})
        return StoredSchedule(rev, doc)

    def edit(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Apply ``change`` to the newest document under the edit lock and write it back;
        returns what ``change`` returned."""
        locks = self.store.leader_lock("")
        lease = locks.acquire(SCHEDULE_EDIT_LOCK, EDIT_TTL, wait=EDIT_WAIT)
        if lease is None:
            raise LockHeld(SCHEDULE_EDIT_LOCK)
        try:
            rev, doc = self.read()
            result = change(doc)
            self.store.write_schedule(rev + 1, doc)
            return result
        finally:
            locks.release(lease)

    def close(self) -> None:
        if self._close is not None:
            self._close()


class RunMarks:
    """Which run-now requests were sent, written by the replica that sent the run (no edit
    lock in the beat loop)."""

    def __init__(self, store: ScheduleDocument, retention: float) -> None:
        self.store = store
        self.retention = retention

    def mark(self, run_id: str) -> None:
        self.store.store.mark_runs_sent([run_id], self.retention)

    def sent(self, run_ids: Sequence[str]) -> set[str]:
        """The ids of ``run_ids`` known to have been sent."""
        return self.store.store.runs_sent(run_ids)


def released(backfill: Mapping[str, Any], now: int) -> list[int]:
    """The slots of a backfill request (``{"entry", "slots", "rate", "at", "until"}``, see
    :func:`celery_singleton_beat.schedule.backfill`) whose turn has come at ``now``: slot
    ``i`` at ``at + i / rate`` seconds, the same on every replica, so that the replicas
    together send at most ``rate`` slots a second."""
    if now < backfill["at"]:
        return []
    count = 1 + int((now - backfill["at"]) * backfill["rate"] / 1000)
    return list(backfill["slots"][:count])


def next_release(backfill: Mapping[str, Any], now: int) -> int | None:
    """When the next slot of a backfill request comes out (ms), None once all are out."""
    count = len(released(backfill, now))
    if count >= len(backfill["slots"]):
        return None
    return int(backfill["at"] + count * 1000 / backfill["rate"]) + 1


def to_beat(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored entry in ``beat_schedule`` form."""
    policy = {k: spec[k] for k in POLICY_FIELDS if k in spec}
    options = dict(spec.get("options") or {})
    if policy:
        options[OPTION] = policy
    return {
        "task": spec["task"],
        "schedule": _schedule(spec),
        "args": list(spec.get("args") or ()),
        "kwargs": dict(spec.get("kwargs") or {}),
        "options": options,
    }


def _schedule(spec: Mapping[str, Any]) -> Any:
    if "cron" not in spec:
        every = spec.get("every")
        if isinstance(every, bool) or not isinstance(every, (int, float)) or every <= 0:
            raise ConfigurationError("every", every, "a positive number of seconds")
        return float(every)
    parts = str(spec["cron"]).split()
    if len(parts) != 5:
        raise ConfigurationError("cron", spec["cron"], "five fields: 'm h dom mon dow'")
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    try:
        return crontab(minute, hour, day_of_week, day_of_month, month_of_year)
    except ValueError as exc:
        raise ConfigurationError("cron", spec["cron"], f"a valid crontab ({exc})") from None

"""Writes what workers and beat replicas do into ``TaskRun`` and ``SlotDispatch``, and the
schedule each entry had into ``ScheduleVersion``.

Connected in ``AppConfig.ready()``: to Celery's task signals (every task, singleton or not)
and to the library's events (lock key, fencing token, lock wait, skips, lost locks, slot
decisions). The task's own thread only updates a record in memory and hands it over; one
writer thread per process writes batches to the database.

A database error never reaches a task or beat. The writer keeps the records, logs once
that recording is paused, retries with a growing pause and logs again when it resumes.
The records waiting are bounded (``SINGLETON_BEAT_RECORDER_BUFFER``): a second record of
the same run replaces the first, and when the bound is reached the oldest records are
dropped, counted, and the count is logged when recording resumes. Schedule versions wait
apart: each entry's newest one is kept whatever the bound (a replica reports every
entry's version at start, 100,000 at once for 100,000 entries), and only versions that a
newer one of their entry follows count against it. They are written in batches: one
query reads the newest stored version of each entry in a batch, and only a version that
differs from it is written.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import hashlib
import itertools
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from celery import signals, states
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import F, Max, OuterRef, Subquery

from celery_singleton_beat.core.schema import Header, SkipReason
from celery_singleton_beat.observe import events
from celery_singleton_beat.schedule import RUN_NOW

from . import history
from .conf import AppSettings
from .models import ScheduleVersion, SlotDispatch, TaskRun

logger = logging.getLogger(__name__)

SENSITIVE = ("password", "passwd", "secret", "token", "api_key", "apikey", "authorization")
BATCH = 200
#: Schedule versions compared with the stored ones in one query.
VERSION_BATCH = 500

_STATE_STATUS = {
    states.SUCCESS: TaskRun.Status.SUCCESS,
    states.FAILURE: TaskRun.Status.FAILURE,
    states.RETRY: TaskRun.Status.RETRY,
    states.REVOKED: TaskRun.Status.REVOKED,
}
_KEEP = {*TaskRun.SKIPPED, TaskRun.Status.LOCK_LOST}
#: Why a worker's main process kept a message from the pool, by ``RunSkipped.reason``.
_NOT_RUN: dict[str, str] = {
    TaskRun.Status.SKIPPED_DUPLICATE: "dropped before it ran: its beat slot already ran",
    TaskRun.Status.SKIPPED_LOCK_ERROR: (
        "not run: the lock store could not say whether its beat slot ran; sent again"
    ),
}


def longest_runtime(entry: str) -> float | None:
    """The longest recorded run of a beat entry (for ``singleton-beat describe``)."""
    from . import conf  # noqa: PLC0415

    rows = TaskRun.objects.using(conf.load().database).filter(
        entry=entry, status__in=TaskRun.FINISHED
    )
    value = rows.aggregate(longest=Max("runtime"))["longest"]
    return None if value is None else float(value)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def default_preview(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``repr`` of the arguments, with keyword arguments named like secrets masked."""
    shown = {
        k: "***" if any(word in k.lower() for word in SENSITIVE) else v for k, v in kwargs.items()
    }
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in shown.items()]
    return ", ".join(parts)


def args_hash(args: Any, kwargs: Any) -> str:
    text = repr((tuple(args or ()), sorted((kwargs or {}).items())))
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def parse_slot(label: Any) -> dt.datetime | None:
    if not label:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(label).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _run_key(task_id: Any, retries: Any) -> tuple[int, str, int]:
    """One execution: task signals and library events come from the thread running it."""
    return threading.get_ident(), str(task_id), int(retries or 0)


def _migrate_hint(database: str) -> str:
    """What to do when the app's tables are missing from ``database`` (migrate forgotten)."""
    try:
        with connections[database].cursor() as cursor:
            tables = set(connections[database].introspection.table_names(cursor))
    except DatabaseError:
        return ""
    missing = [m._meta.db_table for m in (TaskRun, SlotDispatch) if m._meta.db_table not in tables]
    if not missing:
        return ""
    return (
        f": the app's tables are missing ({', '.join(missing)}); run `manage.py migrate"
        f"{'' if database == 'default' else f' --database {database}'}`"
    )


def capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 15)] + f"… ({len(text)} chars)"


class Recorder:
    """Turns signals and events into rows; one writer thread per process."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self.preview = settings.args_preview or default_preview
        self._serial = itertools.count(1)
        self._unsubscribe: Any = None
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        self._pending: OrderedDict[tuple[str, Any], tuple[str, dict[str, Any]]] = OrderedDict()
        # schedule versions by (entry, since), and the since of each entry's newest one
        self._versions: OrderedDict[tuple[str, Any], dict[str, Any]] = OrderedDict()
        self._newest: dict[str, Any] = {}
        self._busy = 0
        # keyed by thread too: a thread-pool worker may run a slot's message and its
        # re-published copy (same task id, same attempt) at once, each in its own thread
        self._runs: dict[tuple[int, str, int], dict[str, Any]] = {}
        self._pks: dict[int, int] = {}
        self._thread: threading.Thread | None = None
        self._failing: str | None = None
        self._stopping = False
        self._dropped = 0
        self.written = 0

    # -- connecting -------------------------------------------------------------------

    def connect(self) -> None:
        self._unsubscribe = events.subscribe(self.on_event)
        for signal, handler in self._handlers():
            signal.connect(handler, weak=False)
        atexit.register(self.flush, 5.0)

    def disconnect(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for signal, handler in self._handlers():
            signal.disconnect(handler)
        atexit.unregister(self.flush)

    def _handlers(self) -> list[tuple[Any, Any]]:
        return [
            (signals.task_prerun, self.on_prerun),
            (signals.task_postrun, self.on_postrun),
            (signals.task_retry, self.on_retry),
            (signals.task_failure, self.on_failure),
            (signals.task_revoked, self.on_revoked),
            (signals.worker_process_shutdown, self.on_shutdown),
        ]

    # -- worker side ------------------------------------------------------------------

    def on_prerun(self, sender: Any = None, task_id: Any = None, task: Any = None,
                  args: Any = None, kwargs: Any = None, **_: Any) -> None:  # fmt: skip
        request = task.request
        headers = request.headers or {}
        run: dict[str, Any] = {
            "ref": next(self._serial),
            "task_id": str(task_id),
            "attempt": int(request.retries or 0),
            "task_name": str(task.name),
            "entry": str(headers.get(Header.ENTRY.value) or ""),
            "slot": parse_slot(headers.get(Header.SLOT.value)),
            "status": TaskRun.Status.STARTED,
            "node": str(request.hostname or socket.gethostname()),
            "pid": os.getpid(),
            "started_at": now(),
            "args_hash": args_hash(args, kwargs),
            "args_preview": self._preview(str(task.name), args, kwargs),
            "_t0": time.monotonic(),
        }
        self._runs[_run_key(run["task_id"], run["attempt"])] = run
        self._submit_run(run)

    def on_postrun(self, sender: Any = None, task_id: Any = None, task: Any = None,
                   retval: Any = None, state: Any = None, **_: Any) -> None:  # fmt: skip
        request = task.request
        run = self._runs.pop(_run_key(task_id, request.retries), None)
        if run is None:
            return
        run["finished_at"] = now()
        if run.get("runtime") is None:
            run["runtime"] = round(time.monotonic() - run["_t0"], 6)
        if run["status"] not in _KEEP:
            run["status"] = _STATE_STATUS.get(state, run["status"])
        if run["status"] == TaskRun.Status.SUCCESS and retval is not None:
            run["result"] = capped(repr(retval), self.settings.result_max_chars)
        self._submit_run(run)

    def on_retry(self, sender: Any = None, request: Any = None, reason: Any = None,
                 **_: Any) -> None:  # fmt: skip
        run = self._runs.get(_run_key(request.id, request.retries))
        if run is not None:
            if run["status"] not in _KEEP:
                run["status"] = TaskRun.Status.RETRY
            run["exception"] = capped(repr(reason), self.settings.result_max_chars)

    def on_failure(self, sender: Any = None, task_id: Any = None, exception: Any = None,
                   **_: Any) -> None:  # fmt: skip
        retries = int(getattr(getattr(sender, "request", None), "retries", 0) or 0)
        run = self._runs.get(_run_key(task_id, retries))
        if run is not None:
            run["exception"] = capped(repr(exception), self.settings.result_max_chars)

    def on_revoked(self, sender: Any = None, request: Any = None, terminated: bool = False,
                   expired: bool = False, **_: Any) -> None:  # fmt: skip
        """A message revoked before or while it ran (the worker's main process)."""
        info = getattr(request, "request_dict", None) or {}
        headers = info.get("headers") or info
        why = "expired" if expired else "terminated" if terminated else "revoked before it ran"
        run: dict[str, Any] = {
            "ref": next(self._serial),
            "task_id": str(getattr(request, "id", "")),
            "attempt": int(info.get("retries") or 0),
            "task_name": str(getattr(request, "name", "") or getattr(sender, "name", "")),
            "entry": str(headers.get(Header.ENTRY.value) or ""),
            "slot": parse_slot(headers.get(Header.SLOT.value)),
            "status": TaskRun.Status.REVOKED,
            "node": str(getattr(request, "hostname", "") or socket.gethostname()),
            "pid": os.getpid(),
            "started_at": now(),
            "finished_at": now(),
            "note": why,
        }
        self._submit_run(run)

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.SlotFired, events.SlotSkipped)):
            self._on_slot(event)
            return
        task_id = getattr(event, "task_id", None)
        if task_id is None:
            if isinstance(event, events.EntryScheduled):
                self._on_scheduled(event)
            return
        run = self._runs.get(_run_key(task_id, getattr(event, "retries", 0)))
        if run is None:
            if isinstance(event, events.RunSkipped) and event.reason in _NOT_RUN:
                self._submit_run(self._not_run(event))
            return
        if isinstance(event, events.RunStarted):
            run.update(lock_key=event.key, fence=event.fence, lock_wait=round(event.lock_wait, 6))
            self._submit_run(run)
        elif isinstance(event, events.RunSkipped):
            run.update(lock_key=event.key, holder=str(event.holder or "")[:512])
            if event.reason in TaskRun.SKIPPED:
                run["status"] = event.reason
            elif event.reason == SkipReason.RAN_WITHOUT_LOCK:
                run["note"] = "ran without its lock (lock store unreachable, fail_open)"
        elif isinstance(event, events.LockLost):
            run["status"] = TaskRun.Status.LOCK_LOST
        elif isinstance(event, events.RunFinished):
            run["runtime"] = round(event.runtime, 6)
            if event.status == TaskRun.Status.LOCK_LOST:
                run["status"] = TaskRun.Status.LOCK_LOST

    def _not_run(self, event: events.RunSkipped) -> dict[str, Any]:
        """A message the worker's main process kept from the pool (a second copy of a beat
        slot, or one sent again to be checked later): a row of its own, as a revoked one."""
        return {
            "ref": next(self._serial),
            "task_id": event.task_id,
            "attempt": event.retries,
            "task_name": event.task,
            "entry": event.entry or "",
            "slot": parse_slot(event.slot),
            "status": event.reason,
            "node": event.worker,
            "pid": os.getpid(),
            "started_at": now(),
            "finished_at": now(),
            "lock_key": event.key[:512],
            "holder": str(event.holder or "")[:512],
            "note": _NOT_RUN[event.reason],
        }

    def _preview(self, name: str, args: Any, kwargs: Any) -> str:
        try:
            text = self.preview(name, tuple(args or ()), dict(kwargs or {}))
        except Exception as exc:  # a broken redaction hook must not fail the task
            text = f"<SINGLETON_BEAT_ARGS_PREVIEW failed: {type(exc).__name__}: {exc}>"
        return capped(str(text), 1_000)

    # -- beat side --------------------------------------------------------------------

    def _on_slot(self, event: events.SlotFired | events.SlotSkipped) -> None:
        if isinstance(event, events.SlotFired):
            fields: dict[str, Any] = {
                "task_name": event.task, "task_id": event.task_id,
                "outcome": SlotDispatch.Outcome.DISPATCHED, "late": round(event.late, 3),
                "slots": 1 + event.coalesced, "publishes": 1,
            }  # fmt: skip
        else:
            outcomes: dict[str, SlotDispatch.Outcome] = {
                SkipReason.PUBLISH_FAILED: SlotDispatch.Outcome.PUBLISH_FAILED,
                SkipReason.OVERLAP: SlotDispatch.Outcome.SKIPPED_OVERLAP,
            }
            outcome = outcomes.get(event.reason, SlotDispatch.Outcome.SKIPPED_MISFIRE)
            fields = {"outcome": outcome, "slots": event.count, "publishes": 0}
        fields.update(
            entry=event.entry, slot=event.slot, replica=event.replica, decided_at=event.at
        )
        self._submit(("slot", (event.entry, event.slot)), ("slot", fields))

    def _on_scheduled(self, event: events.EntryScheduled) -> None:
        if RUN_NOW in event.entry:
            return  # a run now is counted with its entry, not as an entry of its own
        fields = {
            "entry": event.entry, "since": event.since, "slots": history.encode(event.slots),
            "replica": event.replica,
        }  # fmt: skip
        with self._mutex:
            key = (event.entry, event.since)
            self._versions.pop(key, None)
            self._versions[key] = fields
            self._newest[event.entry] = event.since
            self._drop_superseded()
            self._start_writer()

    def _drop_superseded(self) -> None:
        """Over the bound, the oldest versions that a newer one of their entry follows."""
        over = len(self._versions) - len(self._newest) - self.settings.recorder_buffer
        if over <= 0:
            return
        superseded = [k for k in self._versions if self._newest.get(k[0]) != k[1]][:over]
        for key in superseded:
            del self._versions[key]
        self._count_dropped(len(superseded))

    # -- the writer -------------------------------------------------------------------

    def _submit_run(self, run: dict[str, Any]) -> None:
        fields = {k: v for k, v in run.items() if not k.startswith("_")}
        self._submit(("run", run["ref"]), ("run", fields))

    def _submit(self, key: tuple[str, Any], op: tuple[str, dict[str, Any]]) -> None:
        with self._mutex:
            earlier = self._pending.pop(key, None)
            if earlier is not None and op[0] == "slot" and earlier[1]["publishes"]:
                op[1]["publishes"] += earlier[1]["publishes"]
            self._pending[key] = op
            over = len(self._pending) - self.settings.recorder_buffer
            for _ in range(over):
                self._pending.popitem(last=False)
            self._count_dropped(over)
            self._start_writer()

    def _count_dropped(self, count: int) -> None:
        """Count records dropped at the bound; the first drop of a run of them is logged."""
        if count <= 0:
            return
        if not self._dropped:
            logger.error(
                "singleton beat recorder: %d records wait for the database; dropping the "
                "oldest (SINGLETON_BEAT_RECORDER_BUFFER)", len(self._pending) + len(self._versions),
            )  # fmt: skip
        self._dropped += count

    def _start_writer(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._write_forever, name="singleton-beat-recorder", daemon=True
            )
            self._thread.start()
        self._wake.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record handed over so far is written (``True``) or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._mutex:
            while (self._pending or self._versions or self._busy) and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.notify()
                self._wake.wait(min(left, 0.05))
        return True

    def on_shutdown(self, **_: Any) -> None:
        self.flush(5.0)

    def stop(self) -> None:
        """End the writer thread (records still waiting stay unwritten)."""
        with self._mutex:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(10)

    def _write_forever(self) -> None:
        pause = 0.0
        while True:
            with self._mutex:
                while not self._pending and not self._versions and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                batch = [
                    self._pending.popitem(last=False) for _ in range(min(BATCH, len(self._pending)))
                ]
                versions = [
                    self._versions.popitem(last=False)
                    for _ in range(min(VERSION_BATCH, len(self._versions)))
                ]
                for (entry, since), _fields in versions:
                    if self._newest.get(entry) == since:
                        del self._newest[entry]
                self._busy = len(batch) + len(versions)
            try:
                self._write(batch, [fields for _key, fields in versions])
            except DatabaseError as exc:
                self._paused(exc, batch, versions)
                pause = min(5.0, max(0.25, pause * 2))
                with self._mutex:
                    self._wake.wait_for(lambda: self._stopping, pause)
                continue
            except Exception:
                # not an outage: these records cannot be written; say so and go on
                logger.exception(
                    "singleton beat recorder: %d records could not be written and are dropped",
                    len(batch) + len(versions),
                )
            finally:
                with self._mutex:
                    self._busy = 0
                    self._wake.notify_all()
            pause = 0.0
            self._resumed()

    def _write(
        self,
        batch: list[tuple[tuple[str, Any], tuple[str, dict[str, Any]]]],
        versions: Sequence[dict[str, Any]] = (),
    ) -> None:
        using = self.settings.database
        created: dict[int, int] = {}
        with transaction.atomic(using=using):
            for _key, (kind, fields) in batch:
                if kind == "run":
                    self._write_run(using, dict(fields), created)
                else:
                    self._write_slot(using, dict(fields))
            self._write_versions(using, versions)
        # row ids count only once their transaction committed
        self._pks.update(created)
        self.written += len(batch) + len(versions)
        for _key, (kind, fields) in batch:
            if kind == "run" and fields["status"] != TaskRun.Status.STARTED:
                self._pks.pop(fields["ref"], None)

    def _write_run(self, using: str, fields: dict[str, Any], created: dict[int, int]) -> None:
        ref = fields.pop("ref")
        pk = created.get(ref) or self._pks.get(ref)
        if pk is not None and TaskRun.objects.using(using).filter(pk=pk).update(**fields):
            return
        created[ref] = TaskRun.objects.using(using).create(**fields).pk

    def _write_slot(self, using: str, fields: dict[str, Any]) -> None:
        rows = SlotDispatch.objects.using(using)
        match = {"entry": fields.pop("entry"), "slot": fields.pop("slot")}
        publishes = fields.pop("publishes")
        for _ in range(2):
            if rows.filter(**match).update(**fields, publishes=F("publishes") + publishes):
                return
            try:
                with transaction.atomic(using=using):
                    rows.create(**match, **fields, publishes=publishes)
                return
            except IntegrityError:  # another replica recorded it at the same moment
                continue

    def _write_versions(self, using: str, versions: Sequence[dict[str, Any]]) -> None:
        """Versions of many entries: one query reads each entry's newest stored version,
        and only a version that differs from it is written (:meth:`_write_version`)."""
        if not versions:
            return
        rows = ScheduleVersion.objects.using(using)
        newest = rows.filter(entry=OuterRef("entry")).order_by("-since", "-id").values("id")[:1]

        def heads(names: set[str]) -> dict[str, str]:
            """The slots of each entry's newest stored version."""
            found = rows.filter(entry__in=names, id=Subquery(newest)).values_list("entry", "slots")
            return dict(found)

        stored = heads({fields["entry"] for fields in versions})
        # the first version of entries never recorded (all of them, on a schedule's first
        # start), inserted at once; one another replica inserted first is left out here
        # and compared below with the one stored
        firsts: dict[str, dict[str, Any]] = {}
        for fields in versions:
            if fields["entry"] not in stored and fields["slots"]:
                firsts.setdefault(fields["entry"], fields)
        if firsts:
            rows.bulk_create(
                [ScheduleVersion(**fields, follows=0) for fields in firsts.values()],
                ignore_conflicts=True,
            )
            stored.update(heads(set(firsts)))
        for fields in versions:
            entry, slots = fields["entry"], fields["slots"]
            # the same as the newest stored, or an entry never recorded that left
            if stored[entry] == slots if entry in stored else not slots:
                continue
            self._write_version(using, fields)
            stored[entry] = slots

    def _write_version(self, using: str, fields: dict[str, Any]) -> None:
        """A schedule version, unless the entry's newest one has the same slots already
        (every replica reports each version, and each start reports them all again).

        Two replicas that follow one change record it at the same moment::

            replica a  reads newest: v4 ─ inserts v5 (follows v4) ─ commits
            replica b  reads newest: v4 ─ inserts (follows v4): refused, v5 does
                       reads newest: v5, the same slots ─ done
        """
        rows = ScheduleVersion.objects.using(using).filter(entry=fields["entry"])
        for _ in range(2):
            newest = rows.order_by("-since", "-id").values_list("id", "slots").first()
            follows, slots = newest if newest is not None else (0, None)
            if slots == fields["slots"] or (newest is None and not fields["slots"]):
                return
            try:
                with transaction.atomic(using=using):
                    rows.create(**fields, follows=follows)
                return
            except IntegrityError:  # another replica recorded a version after this one
                continue

    def _paused(self, exc: DatabaseError, batch: list[Any], versions: Sequence[Any] = ()) -> None:
        with self._mutex:
            for key, op in reversed(batch):  # back to the front, unless newer ones arrived
                if key not in self._pending:
                    self._pending[key] = op
                    self._pending.move_to_end(key, last=False)
            while len(self._pending) > self.settings.recorder_buffer:
                self._pending.popitem(last=False)
                self._dropped += 1
            for key, fields in reversed(versions):
                if key not in self._versions:
                    self._versions[key] = fields
                    self._versions.move_to_end(key, last=False)
                    newest = self._newest.get(key[0])
                    if newest is None or newest < key[1]:
                        self._newest[key[0]] = key[1]
            self._drop_superseded()
            waiting = len(self._pending) + len(self._versions)
        with contextlib.suppress(DatabaseError):
            connections[self.settings.database].close()
        message = f"{type(exc).__name__}: {exc}".strip()
        if self._failing is None:
            logger.error(
                "singleton beat recorder: recording paused, database %r unavailable (%s)%s; "
                "tasks and beat keep running, %d records wait in memory (at most %d)",
                self.settings.database, message, _migrate_hint(self.settings.database),
                waiting, self.settings.recorder_buffer,
            )  # fmt: skip
        self._failing = message

    def _resumed(self) -> None:
        if self._failing is None and not self._dropped:
            return
        with self._mutex:
            dropped, self._dropped = self._dropped, 0
        if dropped and self._failing is None:
            logger.error(
                "singleton beat recorder: %d records were dropped: more than "
                "SINGLETON_BEAT_RECORDER_BUFFER waited for the database %r",
                dropped, self.settings.database,
            )  # fmt: skip
        elif dropped:
            logger.error(
                "singleton beat recorder: recording resumed; %d records were dropped while the "
                "database %r was unavailable", dropped, self.settings.database,
            )  # fmt: skip
        else:
            logger.warning(
                "singleton beat recorder: recording resumed, database %r is back; nothing lost",
                self.settings.database,
            )
        self._failing = None

"""``SingletonTask`` (one execution at a time per key, released on every path) and
``SlotAwareTask`` (a beat slot run at most once).

The lock is taken around the *execution*, on the worker, so it catches every way a second
copy can arrive: broker redelivery, a beat slot published again, a manual re-send::

    @app.task(base=SingletonTask, singleton_ttl=60)
    def charge_cards(day): ...

While the body runs, a watchdog extends the lock every ttl/3; the lease is available to
the body as ``self.singleton`` (key, fencing token, ``remaining()``, ``lost``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
import socket
import string
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from celery import Celery, Task
from celery.exceptions import Ignore, Retry
from celery.signals import task_revoked
from kombu.utils.uuid import uuid

from celery_singleton_beat.core import process
from celery_singleton_beat.core.schema import Header, SkipReason, enqueue_lock, ran_lock
from celery_singleton_beat.core.task_keys import bound_arguments, canonical_key
from celery_singleton_beat.errors import ConfigurationError, LockError, LockHeld
from celery_singleton_beat.locks import Lease, LockBackend, Redlock, holder_name
from celery_singleton_beat.locks.redlock import (
    MarkedLease,
    marked_in_turn,
    take_mark,
)
from celery_singleton_beat.locks.watchdog import keeper
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import BackendFactory, Runtime, TaskLocks
from celery_singleton_beat.settings.config import (
    CONFLICT_POLICIES,
    LOCK_ERROR_POLICIES,
    TaskConfig,
    check_choice,
)
from celery_singleton_beat.tasks import startup

logger = logging.getLogger(__name__)

SLOT_HEADER = Header.SLOT.value
ENTRY_HEADER = Header.ENTRY.value
TOKEN_HEADER = Header.LOCK_TOKEN.value
ENQUEUE_HEADER = Header.ENQUEUE_TOKEN.value
SLOT_PENDING_HEADER = Header.SLOT_UNCHECKED.value
#: The Celery event a dropped or skipped copy sends instead of ``task-succeeded``.
SKIPPED_EVENT = "task-singleton-skipped"
_UNSET: Any = object()


class TaskLock(NamedTuple):
    """A task's lock, as one call takes it."""

    backend: LockBackend
    key: str
    ttl: float
    token: str


class SlotMessage(NamedTuple):
    """The beat slot a message was sent for."""

    entry: str
    slot: str
    """The slot's label, as the message's slot header carries it."""


_overrides: list[LockBackend] = []


def task_config(app: Celery) -> TaskConfig:
    """The app's ``singleton_beat_task_*`` settings, read once per process.

    Needs no Redis URL: enough for tasks that bring their own lock backend.
    """
    return Runtime.of(app).task_config()


@contextlib.contextmanager
def override_lock_backend(backend: LockBackend) -> Iterator[LockBackend]:
    """Inside, every singleton and slot-aware task of every app in this process locks on
    ``backend``, whatever the settings or its own ``singleton_backend`` say (for tests:
    see ``celery_singleton_beat.testing.pytest_plugin``)."""
    if not isinstance(backend, LockBackend):
        raise ConfigurationError("override_lock_backend(backend)", backend, "a LockBackend")
    _overrides.append(backend)
    try:
        yield backend
    finally:
        _overrides.remove(backend)


def task_locks(app: Celery) -> TaskLocks:
    """The app's task settings and lock backend, made once per process (safe after fork)."""
    if _overrides:
        return TaskLocks(task_config(app), _overrides[-1])
    return Runtime.of(app).task_locks()


def _worker_name(task: Task, request: Any = None) -> str:
    request = task.request if request is None else request
    return str(request.hostname or f"{socket.gethostname()}/{os.getpid()}")


class SlotAwareTask(Task):  # type: ignore[misc]
    """Runs a beat slot at most once: drops a message whose slot already ran.

    Beat publishes a slot again, with the same task id, when the replica that published it
    died before marking it done. A worker drops such a copy for every task already
    (:mod:`celery_singleton_beat.tasks.copies`); as the app's task base
    (``Celery(..., task_cls="celery_singleton_beat:SlotAwareTask")``) this also drops it in
    eager calls, and with ``singleton_beat_drop_slot_copies = False``.
    Retries of a run (``request.retries > 0``) are never dropped, except a retry made
    because the lock store could not check the slot: that one checks it. When the store
    cannot say, the task's ``on_lock_error`` policy decides (``fail_closed``: retried and
    recorded; ``fail_open``: run, logged as an error and recorded).
    """

    @classmethod
    def on_bound(cls, app: Celery) -> None:
        super().on_bound(app)
        startup.check_at_worker_start(app)  # a bad setting stops the worker at start

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._slot_already_ran():
                raise Ignore()
        except LockError as exc:
            return self._slot_lock_error(exc, args, kwargs)
        return super().__call__(*args, **kwargs)

    def push_request(self, *args: Any, **kwargs: Any) -> None:
        """Push a request that starts from the current one, as Celery >= 5.5 does.

        A task class with its own ``__call__`` runs the body through ``Task.__call__``,
        which pushes a request of its own on top of the one the worker (or ``apply()``, in
        eager mode) pushed. Before Celery 5.5 that request started empty::

            worker/apply   push request(id=..., retries=..., headers=..., is_eager=...)
            our __call__   takes the lock, request.singleton_lease = lease
            Task.__call__  push request(args, kwargs)   <- id None, no lease, called_directly
            body           self.request.id is None, self.singleton is None, retry() re-raises

        Starting from the current request keeps the id, retries, headers and lease in the
        body on every supported Celery.
        """
        super().push_request(*args, **{**vars(self.request), **kwargs})

    def _slot_marker(self, request: Any = None) -> SlotMessage | None:
        request = self.request if request is None else request
        if request.called_directly:
            return None
        return slot_to_check(request.headers or {}, request.retries)

    def _slot_lock_error(self, exc: LockError, args: Any, kwargs: Any) -> Any:
        """The lock store cannot say whether the slot ran: follow ``on_lock_error``."""
        config = self._task_locks()[0]
        entry, slot = self._slot_marker() or SlotMessage("?", "?")
        request = self.request
        unchecked = UncheckedSlot(self.name, str(request.id), entry, slot, _worker_name(self))
        if unchecked.runs(self, config, exc, request.retries):
            return super().__call__(*args, **kwargs)
        raise self.retry(countdown=option(self, "retry_countdown", config), exc=exc)

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Like Celery's ``retry``; a retry before the slot could be checked checks it (and
        only such a retry: once this message holds the slot, its retries run)."""
        headers = self.request.headers or {}
        if self._slot_marker() is not None:
            unchecked = not getattr(self.request, "singleton_slot_checked", False)
            if unchecked or SLOT_PENDING_HEADER in headers:
                sent = {**headers, **(kwargs.get("headers") or {})}
                sent.pop(SLOT_PENDING_HEADER, None)
                kwargs["headers"] = {**sent, SLOT_PENDING_HEADER: "1"} if unchecked else sent
        return super().retry(*args, **kwargs)

    def _send_skipped_event(self, key: str, reason: str, holder: str | None) -> None:
        """Tell Celery's event stream (Flower, ``celery events``) that this copy did not run.

        The copy then raises :class:`~celery.exceptions.Ignore`: the worker stores no state
        for it, so a copy dropped while the real run (same task id) executes cannot store
        ``SUCCESS``/``None`` before the real result, nor overwrite it afterwards.
        """
        request = self.request
        if getattr(request, "is_eager", False) or not request.hostname:
            return
        headers = request.headers or {}
        send_skipped_event(
            functools.partial(self.send_event, retry=False), self.name, str(request.id), key,
            reason, holder, headers.get(ENTRY_HEADER), headers.get(SLOT_HEADER),
        )  # fmt: skip

    def _skipped(self, key: str, reason: str, holder: str | None) -> None:
        headers = self.request.headers or {}
        events.emit(
            events.RunSkipped(
                task=self.name, task_id=str(self.request.id), key=key, reason=reason,
                holder=holder, worker=_worker_name(self), retries=self.request.retries,
                entry=headers.get(ENTRY_HEADER), slot=headers.get(SLOT_HEADER),
            )
        )  # fmt: skip

    def _slot_already_ran(self) -> bool:
        """Claim the slot for this run; ``True`` (and recorded) when another run had it."""
        claimed = self._claim_slot()
        return claimed is not None and claimed.mark is None

    def _claim_slot(self, lock: TaskLock | None = None, request: Any = None) -> MarkedLease | None:
        """Claim the slot for this run (None: not a slot message); a slot another run had
        is logged and recorded (``mark`` None). With ``lock`` (the task's own), the lock is
        taken after the claim, in the same round trip where both live on the same masters.
        """
        marker = self._slot_marker(request)
        if marker is None:
            return None
        config, backend = Runtime.of(self.app).slot_marks(*self._task_locks())
        entry, slot = marker
        key = ran_lock(entry, slot)
        holder = None
        if lock is None:
            marked, holder = take_mark(backend, key, config.fence_retention)
            claimed = MarkedLease(marked, None, None)
        else:
            locks, lock_key, ttl, token = lock
            take = locks.acquire_marked if isinstance(locks, Redlock) else (
                functools.partial(marked_in_turn, locks)
            )  # fmt: skip
            claimed = take(
                lock_key, ttl, token=token, marks=backend, mark=key, mark_ttl=config.fence_retention
            )
        self.request.singleton_slot_checked = True
        if claimed.mark is not None:
            return claimed
        holder = holder_name(holder or holder_of(backend, key))
        record_dropped_copy(self.name, str(self.request.id), entry, slot, key, holder,
                            _worker_name(self))  # fmt: skip
        self._send_skipped_event(key, "skipped_duplicate", holder)
        return claimed

    def _task_locks(self) -> TaskLocks:
        return task_locks(self.app)


class SingletonTask(SlotAwareTask):
    """A task of which one execution at a time runs per key.

    Options (class attributes or ``@app.task`` arguments; app-wide defaults from the
    ``singleton_beat_task_*`` settings):

    - ``singleton_key``: None (task name + canonical arguments), a template over the
      arguments such as ``"sync:{account_id}"``, or a callable ``(args, kwargs) -> str``;
    - ``singleton_ttl``: lock TTL in seconds, extended by a watchdog while the body runs;
    - ``singleton_on_conflict``: ``"skip"`` (recorded), ``"retry"`` or ``"raise"``;
    - ``singleton_retry_countdown``: seconds before a retry after a conflict or lock error;
    - ``singleton_release_on_retry``: release the lock when the body retries (default), or
      keep it for the retry;
    - ``singleton_on_lock_error``: ``"fail_closed"`` (do not run; retried later) or
      ``"fail_open"`` (run without the lock, logged loudly);
    - ``singleton_enqueue``: also lock at ``apply_async``: while a message for the key is
      queued or running, ``delay()`` returns its ``AsyncResult`` instead of queueing a copy;
    - ``singleton_enqueue_ttl``: how long such a queued message may wait (seconds);
    - ``singleton_backend``: a lock backend or a callable ``(app) -> backend``.
    """

    singleton_key: str | Callable[[tuple[Any, ...], dict[str, Any]], str] | None = None
    singleton_ttl: float = _UNSET
    singleton_on_conflict: str = _UNSET
    singleton_retry_countdown: float = _UNSET
    singleton_release_on_retry: bool = _UNSET
    singleton_on_lock_error: str = _UNSET
    singleton_enqueue: bool = False
    singleton_enqueue_ttl: float = 3600.0
    singleton_backend: LockBackend | BackendFactory | None = None
    _singleton_kept: tuple[int, object, TaskLocks | None] = (0, None, None)
    """What :meth:`_task_locks` found last: in which process (an app has one runtime per
    process), for which backend option, and the settings and backend."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("singleton_key", "singleton_backend"):  # functions here are not methods
            if inspect.isfunction(cls.__dict__.get(name)):
                setattr(cls, name, staticmethod(cls.__dict__[name]))
        run = cls.__dict__.get("run")
        if run is not None:
            _check_options(cls, inspect.signature(run))

    @property
    def singleton(self) -> Lease | None:
        """The running execution's lease (key, fence, ``remaining()``, ``lost``), if any."""
        return getattr(self.request, "singleton_lease", None)

    def lock_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The lock key of one call, computed on the worker."""
        key = self.singleton_key
        if callable(key):
            return f"task:{key(args, kwargs)}"
        if isinstance(key, str):
            return f"task:{key.format(**bound_arguments(self.run, args, kwargs))}"
        return f"task:{canonical_key(self.name, self.run, args, kwargs)}"

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        """Queue the task; with ``singleton_enqueue``, at most one message per key.

        While a message for the same key is queued or running, returns that message's
        ``AsyncResult`` and queues nothing.
        """
        if not self.singleton_enqueue or options.get("retries"):
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        backend = self._task_locks()[1]
        task_id = task_id or uuid()
        key = enqueue_lock(self.lock_key(tuple(args or ()), dict(kwargs or {})))
        lease = backend.acquire(key, ttl=self.singleton_enqueue_ttl, token=f"{task_id}@enqueue")
        if lease is None:
            holder = holder_of(backend, key)
            if holder is not None:
                return self.AsyncResult(holder.split("@", 1)[0])
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        headers = dict(options.pop("headers", None) or {})
        headers[ENQUEUE_HEADER] = json.dumps([key, lease.token])
        try:
            return super().apply_async(args, kwargs, task_id=task_id, headers=headers, **options)
        except BaseException:
            backend.release(lease)
            raise

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request  # read once: each read walks Celery's request stack
        if request.called_directly:
            return self.run(*args, **kwargs)
        try:
            return self._locked_call(request, args, kwargs)
        finally:
            headers = request.headers  # most messages carry no enqueue lock: no call then
            if (
                headers
                and ENQUEUE_HEADER in headers
                and not getattr(request, "singleton_retrying", False)
            ):
                release_enqueue_lock(self, headers)

    def _locked_call(self, request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        config, backend = self._task_locks()
        key = self.lock_key(args, kwargs)
        started = time.monotonic()
        headers = request.headers or {}
        try:
            token = headers.get(TOKEN_HEADER) or (
                f"{os.urandom(16).hex()}@{process.owner()}/{request.id}"
            )
            ttl = config.task_ttl if self.singleton_ttl is _UNSET else self.singleton_ttl
            claimed = None
            if headers.get(SLOT_HEADER):  # a beat slot's message: its mark and the lock at once
                claimed = self._claim_slot(TaskLock(backend, key, ttl, token), request)
            if claimed is None:
                lease = backend.acquire(key, ttl=ttl, token=token)
            elif claimed.mark is None:  # the slot already ran: this copy stores nothing
                raise Ignore()
            elif claimed.error is not None:
                raise claimed.error
            else:
                lease = claimed.lease
        except LockError as exc:
            if events.wanted():
                self._attempted(key, backend, "error", started)
            return self._on_lock_error(key, exc, config, args, kwargs)
        if events.wanted():
            self._attempted(key, backend, "held" if lease is None else "acquired", started)
        if lease is None:
            return self._on_conflict(key, backend, config)
        return self._run_holding(request, backend, lease, time.monotonic() - started, args, kwargs)

    def _attempted(self, key: str, backend: LockBackend, outcome: str, started: float) -> None:
        events.emit(
            events.LockAttempt(
                task=self.name, key=key, backend=type(backend).__name__, outcome=outcome,
                seconds=time.monotonic() - started,
            )
        )  # fmt: skip

    def _run_holding(  # noqa: PLR0917  (_locked_call's state, handed to its second half)
        self,
        request: Any,
        backend: LockBackend,
        lease: Lease,
        lock_wait: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        request.singleton_lease = lease
        if events.wanted():
            events.emit(
                events.RunStarted(
                    task=self.name, task_id=str(request.id), key=lease.key, fence=lease.fence,
                    lock_wait=lock_wait, worker=_worker_name(self, request),
                    retries=request.retries, entry=(request.headers or {}).get(ENTRY_HEADER),
                    slot=(request.headers or {}).get(SLOT_HEADER),
                )
            )  # fmt: skip
        watchdog = keeper.keep(backend, lease, on_lost=self._on_lost)
        status, error, release = "success", None, True
        started = time.monotonic()
        try:
            # The worker (or apply()) pushed this task and its request: Task.__call__ would
            # push a copy of the request first, a tenth of a singleton run's own cost.
            return self.run(*args, **kwargs)
        except Retry:
            # retry() marked the body's own request; the finally of __call__ reads this one
            request.singleton_retrying = True
            status, release = "retry", self._option("release_on_retry", self._task_locks()[0])
            raise
        except BaseException as exc:
            status, error = "failure", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            watchdog.stop()
            if lease.lost:
                status = "lock_lost"
            if release:
                try:
                    backend.release_nowait(lease)
                except LockError as exc:
                    logger.warning("task %s: could not release %r (%s); it expires by its TTL",
                                   self.name, lease.key, exc)  # fmt: skip
            if events.wanted():
                events.emit(
                    events.RunFinished(
                        task=self.name, task_id=str(request.id), key=lease.key, status=status,
                        runtime=time.monotonic() - started, lock_wait=lock_wait,
                        worker=_worker_name(self, request), retries=request.retries,
                        error=error,
                    )
                )  # fmt: skip

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Like Celery's ``retry``; a lock kept for the retry travels in its headers."""
        self.request.singleton_retrying = True
        enqueue_token = (self.request.headers or {}).get(ENQUEUE_HEADER)
        if enqueue_token:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), ENQUEUE_HEADER: enqueue_token}
        lease = self.singleton
        if lease is not None and not self._option("release_on_retry", self._task_locks()[0]):
            countdown = float(kwargs.get("countdown") or self.default_retry_delay or 0)
            config, backend = self._task_locks()
            backend.extend(lease, ttl=countdown + self._option("ttl", config))
            headers = dict(kwargs.pop("headers", None) or {})
            headers[TOKEN_HEADER] = lease.token
            kwargs["headers"] = headers
        return super().retry(*args, **kwargs)

    def _on_lost(self, lease: Lease) -> None:
        logger.error(
            "task %s[%s]: lock %r lost while running (fence %d); it is no longer exclusive",
            self.name, self.request.id, lease.key, lease.fence,
        )  # fmt: skip
        events.emit(
            events.LockLost(
                task=self.name, task_id=str(self.request.id), key=lease.key,
                fence=lease.fence, worker=_worker_name(self),
            )
        )  # fmt: skip

    def _on_conflict(self, key: str, backend: LockBackend, config: TaskConfig) -> Any:
        policy = self._option("on_conflict", config)
        if policy == "retry":
            raise self.retry(countdown=self._option("retry_countdown", config))
        if policy == "raise":
            raise LockHeld(key)
        holder = holder_name(holder_of(backend, key))
        logger.info(
            "task %s[%s]: %r is held by %s; skipped", self.name, self.request.id, key, holder,
            extra={"task_id": str(self.request.id), "key": key, "holder": holder},
        )  # fmt: skip
        self._skipped(key, "skipped_duplicate", holder)
        self._send_skipped_event(key, "skipped_duplicate", holder)
        raise Ignore()

    def _on_lock_error(
        self, key: str, exc: LockError, config: TaskConfig, args: Any, kwargs: Any
    ) -> Any:
        if self._option("on_lock_error", config) == "fail_open":
            logger.error(
                "task %s[%s]: lock store unreachable (%s); running WITHOUT the lock %r "
                "(singleton_on_lock_error = 'fail_open')",
                self.name, self.request.id, exc, key,
            )  # fmt: skip
            self._skipped(key, "ran_without_lock", None)
            return super(SlotAwareTask, self).__call__(*args, **kwargs)
        logger.warning("task %s[%s]: lock store unreachable (%s); not run, retrying later",
                       self.name, self.request.id, exc)  # fmt: skip
        self._skipped(key, "skipped_lock_error", None)
        raise self.retry(countdown=self._option("retry_countdown", config), exc=exc)

    def _task_locks(self) -> TaskLocks:
        if _overrides:
            return task_locks(self.app)
        chosen = self.singleton_backend
        kept_pid, kept_chosen, kept = self._singleton_kept
        if kept is not None and kept_pid == process.pid() and kept_chosen is chosen:
            return kept
        runtime = Runtime.of(self.app)
        if chosen is None:
            store = runtime.task_locks()
        else:
            store = TaskLocks(runtime.task_config(), runtime.backend_for(chosen))
        self._singleton_kept = (runtime.pid, chosen, store)  # one tuple: safe across threads
        return store

    def _option(self, name: str, config: TaskConfig) -> Any:
        return option(self, name, config)


def release_enqueue_lock(task: Any, headers: dict[str, Any] | None) -> None:
    """Free the enqueue lock a message carries, once the message is done with."""
    carried = (headers or {}).get(ENQUEUE_HEADER)
    if not carried or not isinstance(task, SingletonTask):
        return
    key, token = _enqueue_lock(str(carried))
    _config, backend = task._task_locks()
    lease = Lease(
        key, token, fence=0, ttl=1.0, valid_until=backend.clock() + 1.0, clock=backend.clock
    )
    try:
        backend.release(lease)
    except LockError as exc:
        logger.warning(
            "could not release the enqueue lock %r (%s); it expires by its TTL", key, exc
        )


class _Carried(NamedTuple):
    """An enqueue lock a message carries."""

    key: str
    token: str


def _enqueue_lock(carried: str) -> _Carried:
    """The key and token of an enqueue-lock header: a JSON pair, since a key may hold any
    character; messages queued by earlier versions carry ``key\\ntoken``."""
    if carried.startswith("["):
        key, token = json.loads(carried)
        return _Carried(str(key), str(token))
    key, _, token = carried.rpartition("\n")
    return _Carried(key, token)


def _release_on_revoke(sender: Any = None, request: Any = None, **_: Any) -> None:
    """A revoked message never runs: free its enqueue lock now rather than after the TTL."""
    release_enqueue_lock(sender, getattr(request, "headers", None))


task_revoked.connect(_release_on_revoke, weak=False)


def holder_of(backend: LockBackend, key: str) -> str | None:
    """The token ``key`` is held with; None when nobody holds it or the store cannot say."""
    try:
        return backend.holder(key)
    except LockError:
        return None


def option(task: Any, name: str, config: TaskConfig) -> Any:
    """A task's ``singleton_<name>`` option where it sets one (any task may: Celery makes
    ``@app.task`` arguments attributes), else the app's ``singleton_beat_task_<name>``."""
    value = getattr(task, f"singleton_{name}", _UNSET)
    return getattr(config, f"task_{name}") if value is _UNSET else value


def slot_to_check(headers: Mapping[str, Any], retries: int | None) -> SlotMessage | None:
    """The entry and slot of a message beat sent for a slot, if it must be checked before it
    runs: not a retry of a run (``retries > 0``), unless that retry was made because the
    slot could not be checked."""
    entry, slot = headers.get(ENTRY_HEADER), headers.get(SLOT_HEADER)
    if not entry or not slot:
        return None
    if retries and not headers.get(SLOT_PENDING_HEADER):
        return None
    return SlotMessage(str(entry), str(slot))


def record_dropped_copy(  # noqa: PLR0917  (the fields of the record, in its order)
    task: str, task_id: str, entry: str, slot: str, key: str, holder: str | None, worker: str
) -> None:
    """Log and emit that a copy of a slot that already ran is dropped, unrun."""
    logger.warning(
        "task %s[%s]: slot %s of %r already ran (%s); dropping this copy",
        task, task_id, slot, entry, holder,
        extra={"task_id": task_id, "entry": entry, "slot": slot, "key": key, "holder": holder},
    )  # fmt: skip
    events.emit(
        events.RunSkipped(
            task=task, task_id=task_id, key=key, reason=SkipReason.SKIPPED_DUPLICATE.value,
            holder=holder, worker=worker, entry=entry, slot=slot,
        )
    )  # fmt: skip


def send_skipped_event(  # noqa: PLR0917  (the fields of the event, in its order)
    send: Callable[..., Any], task: str, task_id: str, key: str, reason: str,
    holder: str | None, entry: str | None, slot: str | None,
) -> None:  # fmt: skip
    """Send Celery's ``task-singleton-skipped`` event through ``send`` (a task's or a worker
    request's ``send_event``); an event is never worth failing a task for."""
    try:
        send(SKIPPED_EVENT, reason=reason, key=key, holder=holder, task=task, entry=entry,
             slot=slot)  # fmt: skip
    except Exception as exc:
        logger.warning("task %s[%s]: could not send %s (%s)", task, task_id, SKIPPED_EVENT, exc)


@dataclasses.dataclass(frozen=True)
class UncheckedSlot:
    """A slot's message whose "ran" mark the lock store could not read or take."""

    task: str
    task_id: str
    entry: str
    slot: str
    worker: str

    def runs(self, task: Any, config: TaskConfig, exc: LockError, retries: int = 0) -> bool:
        """Follow the task's ``on_lock_error``: ``True`` (``fail_open``: run it, logged as
        an error) or ``False`` (``fail_closed``: the caller sends it again later); recorded
        either way."""
        key = ran_lock(self.entry, self.slot)
        if option(task, "on_lock_error", config) == "fail_open":
            logger.error(
                "task %s[%s]: lock store unreachable (%s); running slot %s of %r WITHOUT "
                "checking that it did not run already (on_lock_error = 'fail_open')",
                self.task, self.task_id, exc, self.slot, self.entry,
            )  # fmt: skip
            self._record(key, SkipReason.RAN_WITHOUT_LOCK.value, retries)
            return True
        logger.warning(
            "task %s[%s]: lock store unreachable (%s); slot %s of %r not run, retrying later",
            self.task, self.task_id, exc, self.slot, self.entry,
        )  # fmt: skip
        self._record(key, SkipReason.SKIPPED_LOCK_ERROR.value, retries)
        return False

    def _record(self, key: str, reason: str, retries: int) -> None:
        events.emit(
            events.RunSkipped(
                task=self.task, task_id=self.task_id, key=key, reason=reason, holder=None,
                worker=self.worker, retries=retries, entry=self.entry, slot=self.slot,
            )
        )  # fmt: skip


def _check_options(cls: type[SingletonTask], signature: inspect.Signature) -> None:
    """Refuse bad options when the task class is made (at registration), naming the task."""
    name = getattr(cls, "name", None) or cls.__name__
    key = cls.singleton_key
    if isinstance(key, str):
        _check_template(f"{name}.singleton_key", key, list(signature.parameters))
    elif key is not None and not callable(key):
        raise ConfigurationError(
            f"{name}.singleton_key", key, "None, a template string or a callable (args, kwargs)"
        )
    if cls.singleton_on_conflict is not _UNSET:
        check_choice(f"{name}.singleton_on_conflict", cls.singleton_on_conflict, CONFLICT_POLICIES)
    if cls.singleton_on_lock_error is not _UNSET:
        check_choice(
            f"{name}.singleton_on_lock_error", cls.singleton_on_lock_error, LOCK_ERROR_POLICIES
        )
    ttl = cls.singleton_ttl
    if ttl is not _UNSET and (
        isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0
    ):
        raise ConfigurationError(f"{name}.singleton_ttl", ttl, "a positive number of seconds")


_TEMPLATE_FORM = (
    "a template naming the task's arguments as plain fields, such as 'sync:{account_id}' "
    "or 'day:{day:%Y-%m-%d}' (no attribute or index access, no !r/!s/!a, no positional {}), "
    "or a callable (args, kwargs) -> str for anything else"
)


def _check_template(setting: str, template: str, params: list[str]) -> None:
    """Refuse a key template that reaches past an argument's value.

    ``{account.__class__}`` or ``{a.__init__.__globals__[API_KEY]}`` would put object
    internals, even secrets, into lock keys, and make unrelated calls share a key.
    """
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template)
                  if f is not None]  # fmt: skip
    except ValueError as exc:
        raise ConfigurationError(setting, template, f"{_TEMPLATE_FORM} ({exc})") from None
    for field, spec, conversion in fields:
        if not field.isidentifier() or conversion is not None or "{" in (spec or ""):
            written = field + (f"!{conversion}" if conversion else "")
            written += f":{spec}" if spec else ""
            raise ConfigurationError(
                setting, template, f"{_TEMPLATE_FORM}; {{{written}}} is not a plain field"
            )
        if field not in params:
            raise ConfigurationError(
                setting,
                template,
                f"a template over the task's arguments {sorted(params)}; "
                f"{field!r} is not one of them",
            )

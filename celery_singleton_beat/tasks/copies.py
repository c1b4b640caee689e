"""A beat slot sent again runs once for every task of a worker, not only for singleton tasks.

Beat sends a slot again, with the same task id and the same ``singleton_beat_entry`` and
``singleton_beat_slot`` headers, when the replica that sent it died before marking it done
(or after a failover of its store). A worker of an app that uses the library drops such a
second copy before it runs, whatever the task's base class: at start-up it gives every
task of the app a request class (Celery's documented ``Task.Request``) that, in the
worker's main process, takes the slot's "ran" mark (the one :class:`SlotAwareTask` takes,
on the same lock store) before the message goes to the pool::

    consumer   message received, reserved
    worker     a pool slot is free: request.execute_using_pool(pool)
    ours         no slot headers (or a retry of a run)  -> to the pool, nothing else
                 mark "ran:{entry}:{slot}" taken         -> to the pool: this copy runs
                 mark held by an earlier copy            -> acknowledged, recorded, dropped
                 lock store does not answer              -> on_lock_error: run it, or send
                                                            it again after a countdown

A dropped copy never reaches a pool process: it stores nothing in the result backend
(the real run's result stays), sends ``task-singleton-skipped`` instead of Celery's
``task-started``/``task-succeeded``, and emits a
:class:`~celery_singleton_beat.events.RunSkipped` (reason ``skipped_duplicate``), which
the Django app records.

Prefork and solo pools hand a message over only once a pool process is free for it, so
the mark is taken just before the message runs. Singleton and slot-aware tasks keep
taking the mark themselves, in the pool process (a singleton task with its own lock, in
one round trip); eager calls never meet a worker's request and are left as they are.

The switch is ``singleton_beat_drop_slot_copies`` (default ``True``). The worker learns
that the app uses the library from the app's settings when it starts: ``beat_scheduler``
naming the scheduler, or any ``singleton_beat_*`` setting. The hook is Celery's
``worker_init`` signal, connected when this module is imported: by every ``celery``
command (the package's ``celery.commands`` entry point loads
:mod:`celery_singleton_beat.ops.cli`), by the package's pytest plugin for Celery's
in-process test worker, and by any import of :mod:`celery_singleton_beat.tasks`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import signals
from celery.exceptions import TaskRevokedError
from celery.utils.imports import symbol_by_name
from celery.worker.request import Request
from celery.worker.state import task_ready

from celery_singleton_beat._compat import request_context
from celery_singleton_beat.core.schema import ran_lock
from celery_singleton_beat.errors import ConfigurationError, LockError
from celery_singleton_beat.locks import holder_name
from celery_singleton_beat.locks.redlock import take_mark
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.settings.config import names_this_library
from celery_singleton_beat.tasks.singleton import (
    SLOT_HEADER,
    SlotAwareTask,
    UncheckedSlot,
    holder_of,
    option,
    record_dropped_copy,
    send_skipped_event,
    slot_to_check,
    task_config,
    task_locks,
)

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

SWITCH = "singleton_beat_drop_slot_copies"
_CHECKED = "_singleton_beat_checks_slot"
_Execute = Callable[..., Any]


class CopyDropped(TaskRevokedError):  # type: ignore[misc]
    """Tells the worker that a message it handed over will not go to the pool (a dropped
    copy, or one sent again later): as for a revoked message, it frees the pool slot it
    had reserved for it."""


def install(app: Celery) -> bool:
    """Give every task of ``app`` that does not check slots itself a request class that
    drops a second copy of a beat slot (``True``); nothing when the app's settings do not
    name the library or turn the drop off (``False``). A setting that cannot work raises
    :class:`~celery_singleton_beat.errors.ConfigurationError`."""
    if not names_this_library(app.conf) or not task_config(app).drop_slot_copies:
        return False
    _check_task_locks(app)
    for task in app.tasks.values():
        if not isinstance(task, SlotAwareTask):
            task.Request = checking(symbol_by_name(task.Request))
    return True


def _check_task_locks(app: Celery) -> None:
    try:
        task_locks(app)
    except ConfigurationError as exc:
        raise ConfigurationError(
            exc.name,
            exc.value,
            f'{exc.accepted}. A worker keeps the "ran" mark of each beat slot in the task '
            f"lock store (singleton_beat_task_redis_urls or singleton_beat_task_backend), "
            f"to drop a second copy; or set {SWITCH} = False",
        ) from None


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """Celery's ``worker_init``: before the consumer reads each task's request class."""
    app = getattr(sender, "app", None)
    if app is None:
        return
    try:
        install(app)
    except ConfigurationError as exc:
        # Celery logs and forgets an exception raised by a signal handler; a worker that
        # cannot keep its promise does not start (the message goes to stderr, exit code 1)
        raise SystemExit(f"celery-singleton-beat: {exc}") from None


def _announce(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Celery's ``celeryd_after_setup`` (``celery worker``, its logging set up): one line
    saying whether this worker drops a slot's second copy."""
    app = getattr(instance, "app", None)
    if app is None or not names_this_library(app.conf):
        return
    if task_config(app).drop_slot_copies:
        logger.info(
            "celery-singleton-beat: this worker drops a second copy of a beat slot, for every "
            "task (%s)", SWITCH,
        )  # fmt: skip
    else:
        logger.warning(
            "celery-singleton-beat: %s is False: a beat slot sent again with the same "
            "task id runs again, except for SingletonTask and SlotAwareTask", SWITCH,
        )  # fmt: skip


def connect() -> None:
    """Connect the worker start-up hooks (done on import; connecting again does nothing)."""
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid=SWITCH)
    signals.celeryd_after_setup.connect(_announce, weak=False, dispatch_uid=SWITCH)


@functools.cache
def checking(base: type[Request]) -> type[Request]:
    """``base`` (Celery's ``Request``, or a task's own subclass of it), dropping a second
    copy of a beat slot before the message goes to the pool."""
    if issubclass(base, SlotCopyChecks):
        return base
    return type(
        f"SlotChecked{base.__name__}",
        (SlotCopyChecks, base),
        {"execute_using_pool": _checked(base.execute_using_pool), "__module__": __name__},
    )


def _checked(execute: _Execute) -> _Execute:
    if getattr(execute, _CHECKED, False):
        return execute

    @functools.wraps(execute)
    def execute_using_pool(self: SlotCopyChecks, pool: Any, **kwargs: Any) -> Any:
        headers = self.request_dict
        if SLOT_HEADER in headers:  # the one look-up a message of no slot pays
            marker = slot_to_check(headers, headers.get("retries"))
            if marker is not None:
                self.drop_if_ran(*marker)
        return execute(self, pool, **kwargs)

    setattr(execute_using_pool, _CHECKED, True)
    return execute_using_pool


class SlotCopyChecks:
    """The request side of :func:`checking`, mixed in before Celery's ``Request``."""

    request_dict: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Celery's worker subclasses a task's request class once per task (its strategy's
        ``create_request_cls``) and writes its own ``execute_using_pool`` there: wrap it."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("execute_using_pool")
        if own is not None:
            cls.execute_using_pool = _checked(own)  # type: ignore[attr-defined]

    def drop_if_ran(self, entry: str, slot: str) -> None:
        """Take the slot's mark for this copy, or drop it (raises :class:`CopyDropped`).

        A revoked or expired message is Celery's to handle, and takes no mark."""
        request: Any = self
        if request.revoked():
            return
        task = request.task
        config, backend = Runtime.of(task.app).slot_marks(*task_locks(task.app))
        key = ran_lock(entry, slot)
        try:
            marked, holder = take_mark(backend, key, config.fence_retention)
        except LockError as exc:
            unchecked = UncheckedSlot(task.name, request.id, entry, slot, request.hostname)
            retries = int(self.request_dict.get("retries") or 0)
            if not unchecked.runs(task, config, exc, retries):
                self._send_again(option(task, "retry_countdown", config), exc)
            return
        if marked is not None:
            return
        holder = holder_name(holder or holder_of(backend, key))
        record_dropped_copy(task.name, request.id, entry, slot, key, holder, request.hostname)
        send_skipped_event(request.send_event, task.name, request.id, key,
                           "skipped_duplicate", holder, entry, slot)  # fmt: skip
        request.acknowledge()
        task_ready(request)
        raise CopyDropped(f"slot {slot} of {entry!r} already ran")

    def _send_again(self, countdown: float, exc: LockError) -> None:
        """Send this message again, unchanged (not counted as a retry of the task), to be
        checked after ``countdown``; back to its queue if it cannot be sent."""
        request: Any = self
        task = request.task
        try:
            again = task.signature_from_request(
                request_context(request), request.args, request.kwargs, countdown=countdown
            )
            again.apply_async()
        except Exception as error:
            logger.error("task %s[%s]: could not send it again (%s); back to its queue",
                         task.name, request.id, error)  # fmt: skip
            request.reject(requeue=True)
        else:
            request.send_event("task-retried", exception=repr(exc), traceback="")
            request.acknowledge()
        task_ready(request)
        raise CopyDropped(f"task {request.id} sent again to check its slot later")


connect()

"""What the library keeps for one Celery app in one process, in one object.

As Celery keeps ``app.amqp`` and ``app.backend``, the library keeps one :class:`Runtime`
per app: its settings (read and checked once), the slot store (made here alone, by
:mod:`celery_singleton_beat.stores.registry`), the task lock backends and the clocks.
Nothing else holds that state, so two apps in one process never share a backend, and a
test injects clocks by setting them on the app's runtime::

    Runtime.of(app).clock = lambda: 1_767_225_600.0
    Runtime.of(app).monotonic = fake.monotonic  # see celery_singleton_beat.testing.clock

A forked child (a prefork worker process) gets a runtime of its own on first use: the
parent's connections are not shared across a fork.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from celery_singleton_beat.core import process
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.locks import LockBackend, Redlock
from celery_singleton_beat.settings.config import Config, TaskConfig, as_written
from celery_singleton_beat.stores.base import SlotStore
from celery_singleton_beat.stores.registry import make_store

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

_ATTRIBUTE = "_singleton_beat_runtime"
BackendFactory = Callable[["Celery"], LockBackend]
"""A function ``(app) -> backend`` (``singleton_beat_task_backend``, ``singleton_backend``)."""


class TaskLocks(NamedTuple):
    """The task settings a task runs with, and the lock backend it takes its locks on."""

    config: TaskConfig
    backend: LockBackend


_made = threading.Lock()


class Runtime:
    """One app's settings, store, lock backends and clocks (see the module docstring)."""

    def __init__(
        self,
        app: Celery,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.clock = clock
        """The wall clock, in seconds since the epoch: slot times are compared with it."""
        self.monotonic = monotonic
        """The monotonic clock, in seconds: when the scheduler heartbeats, polls and elects."""
        self.pid = process.pid()
        self._mutex = threading.RLock()
        self._config: Config | None = None
        self._assumed: Config | None = None
        self._store: SlotStore | None = None
        self._task_config: TaskConfig | None = None
        self._task: TaskLocks | None = None
        self._marks: dict[int, tuple[LockBackend, LockBackend]] = {}
        """Per task lock backend (by id): that backend, and the one for its slot marks."""
        self._backends: dict[int, tuple[object, LockBackend]] = {}
        """Per ``singleton_backend`` option (by id): that option, and the backend it made."""

    @classmethod
    def of(cls, app: Celery) -> Runtime:
        """The app's runtime in this process, made on first use."""
        runtime: Runtime | None = getattr(app, _ATTRIBUTE, None)
        if runtime is not None and runtime.pid == process.pid():
            return runtime
        with _made:
            runtime = getattr(app, _ATTRIBUTE, None)
            if runtime is None or runtime.pid != process.pid():
                if runtime is None:
                    runtime = cls(app)
                else:
                    runtime = cls(app, runtime.clock, runtime.monotonic)
                setattr(app, _ATTRIBUTE, runtime)
            return runtime

    def now_ms(self) -> int:
        """The wall clock in integer milliseconds (slot times)."""
        return int(self.clock() * 1000)

    # -- beat ---------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The scheduler's settings, read from ``app.conf`` and checked once."""
        with self._mutex:
            if self._config is None:
                self._config = Config.from_conf(self.app.conf)
            return self._config

    @property
    def store(self) -> SlotStore:
        """The slot store ``singleton_beat_store`` names, connected once."""
        with self._mutex:
            if self._store is None:
                self._store = make_store(self.app, self.config)
            return self._store

    def assume(self, config: Config) -> None:
        """Run with ``config`` instead of the settings ``app.conf`` gives: for ``check``,
        which audits the store and the schedule sources with each refused setting at its
        default (see :meth:`Config.audited`) rather than stop at the first."""
        with self._mutex:
            self._config = self._assumed = config

    def open_store(self, node_timeout: float | None = None) -> SlotStore:
        """Another connection to the slot store, for the caller alone (which closes it):
        an operator's command or page, with ``node_timeout`` per Redis master (default:
        ``singleton_beat_node_timeout``)."""
        config = self._assumed or Config.from_conf(self.app.conf)
        if node_timeout is not None:
            config = dataclasses.replace(config, node_timeout=node_timeout)
        return make_store(self.app, config)

    def close_store(self) -> None:
        with self._mutex:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    # -- tasks --------------------------------------------------------------------------

    def task_config(self) -> TaskConfig:
        """The task settings, which need no Redis URL (enough for tasks that bring their
        own lock backend)."""
        with self._mutex:
            if self._task_config is None:
                self._task_config = TaskConfig.from_conf(self.app.conf, urls_required=False)
            return self._task_config

    def task_locks(self) -> TaskLocks:
        """The task settings and the app's task lock backend."""
        with self._mutex:
            if self._task is None:
                config = TaskConfig.from_conf(self.app.conf)
                if config.task_backend is not None:
                    made = _backend(
                        config.backend_factory(), self.app, "singleton_beat_task_backend"
                    )
                else:
                    made = Redlock.from_urls(
                        config.redis_urls,
                        node_timeout=config.node_timeout,
                        prefix=config.key_prefix,
                        fence_retention=config.task_fence_retention,
                        transport_options=config.redis_transport_options,
                        use_ssl=config.redis_use_ssl,
                        min_replicas=config.redis_min_replicas,
                    )
                self._task = TaskLocks(config, made)
            return self._task

    def slot_marks(self, config: TaskConfig, backend: LockBackend) -> TaskLocks:
        """The backend for slot "ran" marks next to a task's lock ``backend``: the same,
        but on Redlock with the fencing counters kept only as long as the marks
        (``singleton_beat_fence_retention``), as there is one key per slot."""
        if not isinstance(backend, Redlock):
            return TaskLocks(config, backend)
        with self._mutex:
            made = self._marks.get(id(backend))
            if made is None or made[0] is not backend:
                marks = Redlock(
                    backend.masters, prefix=backend.prefix,
                    fence_retention=config.fence_retention, clock=backend.clock,
                )  # fmt: skip
                made = self._marks[id(backend)] = (backend, marks)
            return TaskLocks(config, made[1])

    def backend_for(self, chosen: LockBackend | BackendFactory | None) -> LockBackend:
        """A task's own ``singleton_backend``: a backend as given, or what a function
        ``(app) -> backend`` returns, called once per app and process (not once per call:
        two calls would give two backends, and no exclusion between them)."""
        if chosen is None:
            return self.task_locks().backend
        if isinstance(chosen, LockBackend):
            return chosen
        with self._mutex:
            made = self._backends.get(id(chosen))
            if made is None or made[0] is not chosen:
                made = (chosen, _backend(chosen, self.app, "singleton_backend"))
                self._backends[id(chosen)] = made
            return made[1]


def _backend(factory: type[LockBackend] | BackendFactory, app: Celery, setting: str) -> LockBackend:
    """A backend from a ``LockBackend`` class (no arguments) or a function ``(app) -> backend``."""
    made = factory() if isinstance(factory, type) else factory(app)
    if not isinstance(made, LockBackend):
        raise as_written(
            app.conf,
            ConfigurationError(setting, made, "a LockBackend, or a function returning one"),
        )
    return made


def load_task_modules(app: Celery, *, log: bool = True) -> Exception | None:
    """Import the app's task modules once (with Django, this also starts Django), so that
    its tasks, their options and the recorders' hooks are known outside a worker. Returns
    why they cannot be imported (the first call's failure, at every call), else None; the
    first call logs it unless ``log`` is false (a caller that reports it itself)."""
    if getattr(app, "_singleton_beat_modules_loaded", False):
        failed: Exception | None = getattr(app, "_singleton_beat_modules_failed", None)
        return failed
    app._singleton_beat_modules_loaded = True
    try:
        app.loader.import_default_modules()
    except Exception as exc:
        app._singleton_beat_modules_failed = exc
        if log:
            logger.warning("%s", modules_failed(exc))
        return exc
    return None


def modules_failed(exc: Exception) -> str:
    """The line that says the app's task modules cannot be imported, and why."""
    return f"the Celery app's task modules cannot be imported: {exc}"

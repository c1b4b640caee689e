"""Every place locks live, as the operator commands ``locks`` and ``unlock`` see them.

Beat's locks (leader lease, schedule edits, slot "ran" marks) are on the masters of
``singleton_beat_redis_urls``, or with another slot store (``singleton_beat_store =
"database"``) in that store's lock backend (the Django app's database locks). Task locks
are on the beat masters too unless ``singleton_beat_task_redis_urls`` names other masters
or ``singleton_beat_task_backend`` another backend: a runbook step that freed a stuck
task's lock on the beat masters only would report success and free nothing. Two places
that are one (the database store's locks and ``DatabaseLock`` tasks on the same alias)
are listed once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from celery_singleton_beat.core.schema import lock_kind
from celery_singleton_beat.errors import ConfigurationError, LockError
from celery_singleton_beat.locks.base import Lease, LockBackend, holder_name
from celery_singleton_beat.ops import cluster as overview
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.settings.config import Config, TaskConfig

if TYPE_CHECKING:
    from celery import Celery


class Released(NamedTuple):
    """What a forced release did."""

    released: bool
    """Whether the lock was deleted anywhere."""
    text: str
    """What was done, in a sentence for the operator."""


class LockStore:
    """One store: its name (shown beside each key), what it holds, a forced release."""

    name = "?"

    def held(self) -> list[dict[str, Any]]:
        """Each held lock: key, kind, holder (host/pid, never the token), remaining seconds,
        fence, store."""
        raise NotImplementedError

    def force_release(self, key: str) -> Released:
        """Delete ``key``'s lock whoever holds it."""
        raise NotImplementedError


class MastersStore(LockStore):
    """Locks on a set of Redis masters, held on a majority of them."""

    def __init__(self, name: str, config: Config | TaskConfig) -> None:
        self.name = name
        self.config = config

    def _clients(self) -> list[Any]:
        found = overview.masters(self.config)
        if overview.health([s for s, _ in found]) == overview.NO_QUORUM:
            down = ", ".join(f"{s.name} ({s.error})" for s, _ in found if not s.reachable)
            raise LockError(f"no majority of the {self.name} answers; down: {down}")
        return overview.reachable(found)

    def held(self) -> list[dict[str, Any]]:
        rows = overview.held_locks(self.config, self._clients())
        return [{**row, "store": self.name} for row in rows]

    def force_release(self, key: str) -> Released:
        clients = self._clients()
        deleted = overview.force_release(self.config, clients, key)
        if not deleted:
            return Released(
                False, f"{key!r} was not held on any of the {len(clients)} reachable masters"
            )
        return Released(True, f"released {key!r} on {deleted} of {len(clients)} reachable masters")


class BackendStore(LockStore):
    """Locks in a ``LockBackend`` (``singleton_beat_task_backend``)."""

    def __init__(self, backend: LockBackend, role: str = "task backend") -> None:
        self.name = f"{role} {backend.describe()}"
        self.backend = backend

    def held(self) -> list[dict[str, Any]]:
        rows = self.backend.held()
        if rows is None:
            raise LockError(f"{self.name} cannot list its locks; unlock KEY still works")
        return [
            {
                "key": row.key,
                "kind": lock_kind(row.key),
                "holder": holder_name(row.token),
                "remaining": row.remaining,
                "fence": row.fence,
                "store": self.name,
            }
            for row in rows
        ]

    def force_release(self, key: str) -> Released:
        token = self.backend.holder(key)
        if token is None:
            return Released(False, f"{key!r} is not held")
        clock = self.backend.clock
        lease = Lease(key, token, fence=0, ttl=1.0, valid_until=clock() + 1.0, clock=clock)
        released = self.backend.release(lease)
        return Released(
            released, f"released {key!r}" if released else f"{key!r} was released meanwhile"
        )


def lock_stores(app: Celery) -> list[LockStore]:
    """Beat's lock store, then the tasks' when it is another one.

    Raises :class:`ConfigurationError` when neither is configured validly.
    """
    beat: Config | None = None
    try:
        beat = Config.from_conf(app.conf)
    except ConfigurationError:
        if not app.conf.get("singleton_beat_task_backend"):
            raise

    def on_masters() -> bool:
        """Whether beat's slot store runs on Redis masters (its locks are theirs)."""
        return bool(Runtime.of(app).store.servers())

    task = _task_config(app, beat, on_masters)
    stores: list[LockStore] = []
    backends: dict[str, tuple[list[str], LockBackend]] = {}
    beat_masters = beat is not None and on_masters()
    if beat is not None and beat_masters:
        stores.append(MastersStore("beat masters", beat))
    elif beat is not None:
        _add(backends, "beat store", Runtime.of(app).store.leader_lock(""))
    if task is not None and task.task_backend is not None:
        _add(backends, "task backend", Runtime.of(app).task_locks().backend)
    elif (
        task is not None
        and task.redis_urls
        and (beat is None or not beat_masters or set(task.redis_urls) != set(beat.redis_urls))
    ):
        stores.append(MastersStore("task masters", task))
    stores += [BackendStore(backend, " and ".join(roles)) for roles, backend in backends.values()]
    return stores


def _task_config(
    app: Celery, beat: Config | None, on_masters: Callable[[], bool]
) -> TaskConfig | None:
    """The task settings as workers read them; None when no task lock store is configured
    beside a slot store other than Redis masters (each task then names its
    ``singleton_backend``)."""
    try:
        return TaskConfig.from_conf(app.conf)
    except ConfigurationError:
        if beat is None or on_masters():
            raise
        TaskConfig.from_conf(app.conf, urls_required=False)  # a bad task setting still says so
        return None


def _add(
    backends: dict[str, tuple[list[str], LockBackend]], role: str, backend: LockBackend
) -> None:
    """Add ``backend`` under ``role``; one already there with the same description (same
    class, same database alias) is the same place, which gets both roles."""
    roles, _backend = backends.setdefault(repr(backend), ([], backend))
    roles.append(role)

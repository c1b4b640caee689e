"""Every place locks live, as the operator commands ``locks`` and ``unlock`` see them.

Beat's locks (leader lease, slot claims) are on ``singleton_beat_redis_urls``. Task locks
are there too unless ``singleton_beat_task_redis_urls`` names other masters or
``singleton_beat_task_backend`` another backend: a runbook step that freed a stuck task's
lock on the beat masters only would report success and free nothing.
"""

from __future__ import annotations

from typing import Any

from celery_singleton_beat.core.schema import StoreKind, lock_kind
from celery_singleton_beat.errors import ConfigurationError, LockError
from celery_singleton_beat.locks.base import Lease, LockBackend, holder_name
from celery_singleton_beat.ops import cluster as overview
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.settings.config import Config, TaskConfig


class LockStore:
    """One store: its name (shown beside each key), what it holds, a forced release."""

    name = "?"

    def held(self) -> list[dict[str, Any]]:
        """Each held lock: key, kind, holder, token, remaining seconds, fence, store."""
        raise NotImplementedError

    def force_release(self, key: str) -> tuple[bool, str]:
        """Delete ``key``'s lock whoever holds it: (released anywhere, what was done)."""
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
        return [c for s, c in found if s.reachable]

    def held(self) -> list[dict[str, Any]]:
        rows = overview.held_locks(self.config, self._clients())
        return [{**row, "store": self.name} for row in rows]

    def force_release(self, key: str) -> tuple[bool, str]:
        clients = self._clients()
        deleted = overview.force_release(self.config, clients, key)
        if not deleted:
            return False, f"{key!r} was not held on any of the {len(clients)} reachable masters"
        return True, f"released {key!r} on {deleted} of {len(clients)} reachable masters"


class BackendStore(LockStore):
    """Locks in a ``LockBackend`` (``singleton_beat_task_backend``)."""

    def __init__(self, backend: LockBackend, name: str = "") -> None:
        self.name = name or f"task backend {backend!r}"
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
                "token": row.token,
                "remaining": row.remaining,
                "fence": row.fence,
                "store": self.name,
            }
            for row in rows
        ]

    def force_release(self, key: str) -> tuple[bool, str]:
        token = self.backend.holder(key)
        if token is None:
            return False, f"{key!r} is not held"
        clock = self.backend.clock
        lease = Lease(key, token, fence=0, ttl=1.0, valid_until=clock() + 1.0, clock=clock)
        released = self.backend.release(lease)
        return released, f"released {key!r}" if released else f"{key!r} was released meanwhile"


def lock_stores(app: Any) -> list[LockStore]:
    """The beat masters, then the task store when it is another one.

    Raises :class:`ConfigurationError` when neither is configured validly.
    """
    stores: list[LockStore] = []
    beat: Config | None = None
    try:
        beat = Config.from_conf(app.conf)
        stores.append(_beat_store(app, beat))
    except ConfigurationError:
        if not app.conf.get("singleton_beat_task_backend"):
            raise
    task = TaskConfig.from_conf(
        app.conf, urls_required=beat is None or beat.store == StoreKind.REDIS
    )
    if task.task_backend is not None:
        overview.load_task_modules(app)  # a Django backend needs Django set up
        backend = Runtime.of(app).task_locks()[1]
        if not any(isinstance(s, BackendStore) and repr(s.backend) == repr(backend)
                   for s in stores):  # fmt: skip
            stores.append(BackendStore(backend))  # not beat's table a second time
    elif beat is None or set(task.redis_urls) != set(beat.redis_urls):
        stores.append(MastersStore("task masters", task))
    return stores


def _beat_store(app: Any, config: Config) -> LockStore:
    """Where beat's locks are: the masters, or the lock table of a store on a database."""
    if config.store == StoreKind.REDIS:
        return MastersStore("beat masters", config)
    overview.load_task_modules(app)  # a Django store needs Django set up
    store = Runtime.of(app).open_store()
    return BackendStore(store.leader_lock(""), f"beat store ({store.name})")

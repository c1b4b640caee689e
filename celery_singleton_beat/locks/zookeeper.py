"""A lock backend on a ZooKeeper ensemble (kazoo): leases on ephemeral znodes.

Each key is a persistent znode ``{root}/locks/{key}`` with one ephemeral child,
``holder``, whose data is the holder's token and TTL. The lease lives as long as both
hold: the holder's *session* (a replica that dies loses its session, and the ensemble
deletes the znode when the session times out) and its *TTL*, counted from the znode's
``mtime`` on the ensemble's clock (a holder that is alive but stuck loses the key after
the TTL, as with every backend). No client clock decides either.

Every grant, in one transaction (all or nothing)::

    set_data(key)                 the key's version rises by one: the fencing token
    [delete(holder, version=v)]   an expired or handed-over holder, exactly as it was read
    create(holder, ephemeral)     fails if another holder got there first

so fencing tokens strictly increase across grants, and a free key costs one round trip.
A held key costs a second one: the holder and the servers' time read together, then the
transaction. Extending is ``set_data(holder, version=v)`` and releasing is
``delete(holder, version=v)``, each in a transaction with ``check(key, version=fence-1)``:
both fail, and change nothing, once the key was granted to anyone since.

For singleton tasks::

    singleton_beat_task_backend = "celery_singleton_beat.locks.zookeeper.from_app"
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery_singleton_beat.connections.zookeeper import (
    ZooKeeper,
    dumps,
    loads,
    name_of,
    node_name,
)
from celery_singleton_beat.locks.base import Clock, HeldLock, Lease, LockBackend
from celery_singleton_beat.locks.redlock import default_owner
from celery_singleton_beat.settings import defaults
from celery_singleton_beat.settings.validate import positive_seconds
from celery_singleton_beat.settings.zookeeper import root_path, zookeeper_settings

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["ZooKeeperLock", "from_app"]


class ZooKeeperLock(LockBackend):
    """Leases under ``{zk.root}/locks`` of one ZooKeeper session."""

    def __init__(
        self, zk: ZooKeeper, *, retry_delay: float = 0.05, clock: Clock = time.monotonic
    ) -> None:
        super().__init__(retry_delay=retry_delay, clock=clock)
        self.zk = zk
        self.owned = False
        """Whether :meth:`close` ends the session (the store's lock shares the store's)."""
        self._versions: dict[tuple[str, str], int] = {}
        """The holder znode's version each lease of this process wrote last."""
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"<ZooKeeperLock {self.zk.name}>"

    def _key(self, key: str) -> str:
        return self.zk.path("locks", node_name(key))

    def do_acquire(self, key: str, ttl: float, token: str | None = None) -> Lease | None:
        token = token or f"{secrets.token_hex(16)}@{default_owner()}"
        started = self.clock()
        parent = self._key(key)
        holder = f"{parent}/holder"
        data = dumps({"token": token, "ttl": max(1, round(ttl * 1000))})
        results = self._grant(key, data, None)
        if results is None and self.zk.ensure(parent):  # the key's first grant here
            results = self._grant(key, data, None)
        if results is None:
            [found] = self.zk.read(f"read lock {key!r}", [holder], clock=True)
            if found is not None:
                held = loads(found[0])
                if held.get("token") != token and found[1].mtime + held["ttl"] > self.zk.now:
                    return None
            results = self._grant(key, data, found[1].version if found else None)
            if results is None:
                return None  # another contender's transaction came first
        version = results[0].version
        with self._mutex:
            self._versions[(key, token)] = 0
        return Lease(
            key, token, fence=version + 1, ttl=ttl, valid_until=started + ttl, clock=self.clock
        )

    def _grant(self, key: str, data: bytes, replaced: int | None) -> list[Any] | None:
        parent = self._key(key)
        holder = f"{parent}/holder"

        def build(transaction: Any) -> None:
            transaction.set_data(parent, b"")
            if replaced is not None:
                transaction.delete(holder, version=replaced)
            transaction.create(holder, data, ephemeral=True)

        return self.zk.commit(f"grant lock {key!r}", build)

    def _version(self, lease: Lease) -> int | None:
        with self._mutex:
            return self._versions.get((lease.key, lease.token))

    def do_extend(self, lease: Lease, ttl: float) -> bool:
        started = self.clock()
        version = self._version(lease)
        if version is None:
            return False
        data = dumps({"token": lease.token, "ttl": max(1, round(ttl * 1000))})
        results = self._ours(lease, lambda t, holder: t.set_data(holder, data, version=version))
        if results is None:
            return False
        with self._mutex:
            self._versions[(lease.key, lease.token)] = results[1].version
        lease.valid_until = started + ttl
        lease.ttl = ttl
        return True

    def do_release(self, lease: Lease) -> bool:
        with self._mutex:
            version = self._versions.pop((lease.key, lease.token), None)
        if version is None:
            return False
        return self._ours(lease, lambda t, holder: t.delete(holder, version=version)) is not None

    def _ours(self, lease: Lease, write: Callable[[Any, str], None]) -> list[Any] | None:
        """``write`` the holder in a transaction that fails unless the key was granted no
        more since ``lease`` (its version is still the one ``lease``'s grant gave it)."""
        parent = self._key(lease.key)

        def build(transaction: Any) -> None:
            transaction.check(parent, lease.fence - 1)
            write(transaction, f"{parent}/holder")

        return self.zk.commit(f"extend or release lock {lease.key!r}", build)

    def holder(self, key: str) -> str | None:
        [found] = self.zk.read(f"read lock {key!r}", [f"{self._key(key)}/holder"], clock=True)
        if found is None:
            return None
        held = loads(found[0])
        alive = found[1].mtime + held["ttl"] > self.zk.now
        return str(held["token"]) if alive else None

    def held(self) -> list[HeldLock] | None:
        keys = self.zk.children("list the held locks", self.zk.path("locks"))
        paths = [f"{self.zk.path('locks', k)}/holder" for k in keys]
        found = self.zk.read("read the held locks", paths, clock=True)
        now = self.zk.now
        locks = []
        for key, znode in zip(keys, found, strict=True):
            if znode is not None:
                held = loads(znode[0])
                left = (znode[1].mtime + held["ttl"] - now) / 1000
                if left > 0:
                    locks.append(HeldLock(name_of(key), held["token"], left, None))
        return locks

    def close(self) -> None:
        if self.owned:
            self.zk.close()


def from_app(app: Celery) -> ZooKeeperLock:
    """The lock backend on the app's ZooKeeper ensemble (``singleton_beat_zookeeper_hosts``,
    ``_chroot`` and ``_options``), under the znode of ``singleton_beat_key_prefix``; a
    request waits at most half of ``singleton_beat_claim_ttl`` for the ensemble."""
    conf = app.conf
    settings = zookeeper_settings(
        conf.get("singleton_beat_zookeeper_hosts"),
        conf.get("singleton_beat_zookeeper_chroot"),
        conf.get("singleton_beat_zookeeper_options"),
    )
    prefix = conf.get("singleton_beat_key_prefix") or defaults.KEY_PREFIX
    wait = positive_seconds(
        "singleton_beat_claim_ttl", conf.get("singleton_beat_claim_ttl") or defaults.CLAIM_TTL
    )
    lock = ZooKeeperLock(ZooKeeper(settings, root_path(prefix), wait=wait / 2))
    lock.owned = True
    return lock

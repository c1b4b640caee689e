"""A lock backend on etcd: a key bound to a lease, written only where it is absent.

Acquire grants a lease of the TTL (whole seconds, rounded up: the lease never ends before
the holder thinks it does) and, in one transaction, puts the key with that lease where the
key does not exist (or holds the caller's own token). The lease ends on the leader's clock:
no replica's clock decides when a key is free again, and a member cut off from the
majority answers nothing. The fencing token is the revision of the put, which etcd
raises on every write of the cluster: strictly increasing across grants.

For singleton tasks::

    singleton_beat_task_backend = "celery_singleton_beat.locks.etcd.from_app"

takes the cluster of ``singleton_beat_etcd_endpoints``.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from typing import TYPE_CHECKING

from celery_singleton_beat.connections.etcd import (
    Etcd,
    absent,
    bound_to,
    delete,
    get,
    kvs_of,
    lease_seconds,
    nested,
    put,
    unb64,
    value_is,
)
from celery_singleton_beat.core import process
from celery_singleton_beat.core.schema import DEFAULT_PREFIX, Keys
from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.locks.base import Clock, HeldLock, Lease, LockBackend
from celery_singleton_beat.settings.config import Config

if TYPE_CHECKING:
    from celery import Celery


class EtcdLock(LockBackend):
    """Leases on the etcd cluster of ``client``, under ``prefix``."""

    def __init__(
        self,
        client: Etcd,
        prefix: str = DEFAULT_PREFIX,
        *,
        owner: str | None = None,
        owns_client: bool = True,
        retry_delay: float = 0.05,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(retry_delay=retry_delay, clock=clock)
        self.client = client
        self.keys = Keys(prefix)
        self.owns_client = owns_client
        """Whether :meth:`close` closes the client (not when a slot store shares it)."""
        self.owner = owner or process.owner()
        self._mutex = threading.Lock()
        self._leases: dict[tuple[str, str], tuple[int, int]] = {}
        """Each held (key, token)'s etcd lease: its id and TTL in whole seconds."""

    def __repr__(self) -> str:
        return f"<EtcdLock {self.client.name}>"

    def do_acquire(self, key: str, ttl: float, token: str | None = None) -> Lease | None:
        start = self.clock()
        token = token or f"{secrets.token_hex(16)}@{self.owner}"
        name = self.keys.lock(key)
        lease = self.client.grant(ttl)
        write = put(name, token, lease)
        again = nested([value_is(name, token)], [write], [])
        reply = self.client.txn([absent(name)], [write], [again])
        granted = reply.get("succeeded", False) or (
            reply["responses"][0]["response_txn"].get("succeeded", False)
        )
        if not granted:
            self._revoke(lease)
            return None
        with self._mutex:
            self._leases[key, token] = (lease, lease_seconds(ttl))
        fence = int(reply["header"]["revision"])
        return Lease(key, token, fence=fence, ttl=ttl, valid_until=start + ttl, clock=self.clock)

    def do_extend(self, lease: Lease, ttl: float) -> bool:
        """Keep the key's lease alive (a TTL as long as it was granted), or give the key a
        new lease of ``ttl`` (another TTL), only while it holds our token."""
        start = self.clock()
        name = self.keys.lock(lease.key)
        with self._mutex:
            held = self._leases.get((lease.key, lease.token))
        if held is not None and held[1] == lease_seconds(ttl):
            return self._keep_alive(lease, held[0], start)
        granted = self.client.grant(ttl)
        reply = self.client.txn(
            [value_is(name, lease.token)], [put(name, lease.token, granted)], []
        )
        if not reply.get("succeeded", False):
            self._revoke(granted)
            return False
        with self._mutex:
            old = self._leases.get((lease.key, lease.token))
            self._leases[lease.key, lease.token] = (granted, lease_seconds(ttl))
        if old is not None:
            self._revoke(old[0])
        lease.valid_until = start + ttl
        lease.ttl = ttl
        return True

    def _keep_alive(self, lease: Lease, granted: int, start: float) -> bool:
        """Renew the lease on the leader (no write to the members' disks), then check that
        the key still holds our token under it (it was not deleted by hand)."""
        reply = self.client.call("lease/keepalive", {"ID": granted})
        if int(reply.get("result", {}).get("TTL", 0)) <= 0:
            return False
        name = self.keys.lock(lease.key)
        ours = [value_is(name, lease.token), bound_to(name, granted)]
        if not self.client.txn(ours, [], []).get("succeeded", False):
            return False
        lease.valid_until = start + lease.ttl
        return True

    def do_release(self, lease: Lease) -> bool:
        """Revoke the lease the key was written with (one round trip): the key goes with
        it, and a lease that has ended already tells us the key was not ours any more."""
        with self._mutex:
            granted = self._leases.pop((lease.key, lease.token), None)
        if granted is not None:
            return "not_found" not in self.client.call("lease/revoke", {"ID": granted[0]})
        name = self.keys.lock(lease.key)
        reply = self.client.txn([value_is(name, lease.token)], [delete(name)], [])
        return bool(reply.get("succeeded", False))

    def _revoke(self, lease: int) -> None:
        """End a lease no key needs any more (best effort: it ends with its TTL anyway)."""
        with contextlib.suppress(StoreUnavailable):
            self.client.call("lease/revoke", {"ID": lease})

    def holder(self, key: str) -> str | None:
        found = self.client.range(self.keys.lock(key))
        return unb64(found[0]["value"]) if found else None

    def held(self) -> list[HeldLock] | None:
        reply = self.client.txn([], [get(self.keys.lock(""), prefix=True)], [])
        found = []
        for record in kvs_of(reply["responses"][0]):
            key = self.keys.lock_name(unb64(record["key"]))
            fence = int(record.get("mod_revision", 0))
            found.append(HeldLock(key, unb64(record["value"]), None, fence))
        return found

    def close(self) -> None:
        if self.owns_client:
            self.client.close()


def from_app(app: Celery) -> EtcdLock:
    """The lock backend on the etcd cluster of the app's ``singleton_beat_etcd_*`` settings."""
    config = Config.from_conf(app.conf)
    return EtcdLock(etcd_client(config), config.key_prefix)


def etcd_client(config: Config) -> Etcd:
    """The client the settings describe (ConfigurationError names a setting refused)."""
    settings = config.etcd
    return Etcd(
        settings.endpoints,
        timeout=settings.timeout,
        username=settings.username,
        password=settings.password,
        ca_file=settings.ca_file,
        cert_file=settings.cert_file,
        key_file=settings.key_file,
    )

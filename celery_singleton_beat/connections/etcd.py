"""An etcd cluster through its own v3 JSON gateway: ranges, transactions and leases.

etcd serves its v3 API as JSON over HTTP beside gRPC (``/v3/kv/range``, ``/v3/kv/txn``,
``/v3/lease/grant``, ...; keys and values in base64, 64-bit integers as strings). Speaking
it over urllib3 needs no protobuf and no generated code, so it works with every protobuf
release and every Python the library supports; the ``etcd3`` package, by contrast, is
built on generated protobuf modules that today's protobuf only loads with
``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``.

Every call goes to one member; a member that does not answer (or answers that it has no
leader) is left for the next one in the list. Every request is linearizable (etcd's
default): an answer comes from a member in the majority, so a member cut off from the
others answers nothing rather than something old.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Sequence
from typing import Any

import urllib3

from celery_singleton_beat.errors import StoreUnavailable

__all__ = ["Etcd", "EtcdError", "b64", "unb64"]

Json = dict[str, Any]

#: The gRPC status of "not found" (a lease that ended), which the gateway passes on.
NOT_FOUND = 5


class EtcdError(StoreUnavailable):
    """No member of the etcd cluster answered (or none has a majority behind it)."""

    def __init__(self, what: str, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        detail = "; ".join(f"{member}: {error}" for member, error in errors.items())
        super().__init__("etcd", what, detail or "no member answered")


def b64(text: str | bytes) -> str:
    """A key or value as the gateway takes it."""
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def unb64(text: str) -> str:
    """A key or value as the gateway gives it."""
    return base64.b64decode(text).decode()


def lease_seconds(ttl: float) -> int:
    """A TTL as etcd grants it: whole seconds, never shorter than asked."""
    return max(1, math.ceil(ttl))


class Etcd:
    """The members at ``endpoints`` (``http://host:2379`` or ``https://...``).

    ``timeout``: seconds each request may take on one member before the next is tried;
    ``username``/``password``: etcd's own authentication (a token is fetched once and
    again when the member says it expired); ``ca_file``, ``cert_file``, ``key_file``: TLS.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.username = username
        self.password = password
        self._pool = urllib3.PoolManager(
            num_pools=max(4, len(self.endpoints)),
            maxsize=4,
            ca_certs=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            retries=False,
            timeout=urllib3.Timeout(total=timeout),
        )
        self._mutex = threading.Lock()
        self._first = 0
        """The member that answered last: asked first next time."""
        self._token: str | None = None

    @property
    def name(self) -> str:
        hosts = ", ".join(e.split("://", 1)[-1] for e in self.endpoints)
        return f"etcd ({hosts})"

    def call(self, path: str, body: Json, what: str = "answer") -> Json:
        """POST ``body`` to ``/v3/{path}`` on the first member that answers; its reply.

        When every member failed but some were reached (they waited for a leader, as
        while the members elect a new one after the leader was lost), the members are
        asked once more: an election takes about one election timeout, and a replica
        should not report the cluster down for the loss of one member. Every request is
        a transaction or a lease call that is safe to send twice."""
        errors: dict[str, str] = {}
        for _round in range(2):
            errors.clear()
            count, start = len(self.endpoints), self._first
            for step in range(count):
                index = (start + step) % count
                endpoint = self.endpoints[index]
                try:
                    reply = self._post(endpoint, path, body)
                except _MemberError as exc:
                    errors[endpoint.split("://", 1)[-1]] = str(exc)
                    continue
                self._first = index
                return reply
            if all("NewConnectionError" in error for error in errors.values()):
                break
        raise EtcdError(what, errors)

    def _post(self, endpoint: str, path: str, body: Json, again: bool = True) -> Json:
        headers = {"Content-Type": "application/json"}
        if self.username is not None:
            headers["Authorization"] = self._auth_token(endpoint)
        try:
            response = self._pool.request(
                "POST", f"{endpoint}/v3/{path}", body=json.dumps(body).encode(), headers=headers
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _MemberError(f"{type(exc).__name__}: {exc}") from None
        try:
            reply: Json = json.loads(response.data or b"{}")
        except ValueError:
            raise _MemberError(f"HTTP {response.status}: not JSON") from None
        if response.status == 200:
            return reply
        message = str(reply.get("message") or reply.get("error") or f"HTTP {response.status}")
        if reply.get("code") == NOT_FOUND:  # an answer (a lease that ended), not a fault
            return {"not_found": message}
        if again and self.username is not None and "token" in message:
            with self._mutex:
                self._token = None
            return self._post(endpoint, path, body, again=False)
        if "authentication failed" in message or "permission denied" in message:
            raise StoreUnavailable("etcd", path, f"{message} (check the etcd user and password)")
        raise _MemberError(message)

    def _auth_token(self, endpoint: str) -> str:
        with self._mutex:
            token = self._token
        if token is not None:
            return token
        body = {"name": self.username, "password": self.password}
        try:
            response = self._pool.request(
                "POST", f"{endpoint}/v3/auth/authenticate", body=json.dumps(body).encode()
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _MemberError(f"{type(exc).__name__}: {exc}") from None
        reply = json.loads(response.data or b"{}")
        if response.status != 200 or "token" not in reply:
            message = reply.get("message") or f"HTTP {response.status}"
            raise StoreUnavailable("etcd", "authenticate", f"{message} (check the etcd user)")
        with self._mutex:
            self._token = str(reply["token"])
            return self._token

    # -- the calls ------------------------------------------------------------------------

    def txn(self, compare: list[Json], success: list[Json], failure: list[Json]) -> Json:
        """One transaction: ``success`` if every comparison holds, else ``failure``."""
        return self.call("kv/txn", {"compare": compare, "success": success, "failure": failure})

    def range(self, key: str, *, prefix: bool = False) -> list[Json]:
        """The key's record (or every record under the prefix), each as the gateway gives it."""
        return list(self.call("kv/range", range_op(key, prefix=prefix)).get("kvs", []))

    def grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds (rounded up to whole seconds); its id."""
        return int(self.call("lease/grant", {"TTL": lease_seconds(ttl)})["ID"])

    def remaining(self, lease: int) -> int:
        """Seconds the lease has left on the leader's clock (-1: gone)."""
        return int(self.call("lease/timetolive", {"ID": lease}).get("TTL", -1))

    def close(self) -> None:
        self._pool.clear()


class _MemberError(Exception):
    """One member did not answer usefully: try the next."""


# -- the pieces of a transaction --------------------------------------------------------


def range_op(key: str, *, prefix: bool = False) -> Json:
    body: Json = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return body


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def put(key: str, value: str, lease: int = 0) -> Json:
    body: Json = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = lease
    return {"request_put": body}


def get(key: str, *, prefix: bool = False) -> Json:
    return {"request_range": range_op(key, prefix=prefix)}


def delete(key: str) -> Json:
    return {"request_delete_range": {"key": b64(key)}}


def nested(compare: list[Json], success: list[Json], failure: list[Json]) -> Json:
    return {"request_txn": {"compare": compare, "success": success, "failure": failure}}


def absent(key: str) -> Json:
    """Compare: ``key`` does not exist."""
    return {"key": b64(key), "target": "CREATE", "create_revision": 0, "result": "EQUAL"}


def value_is(key: str, value: str) -> Json:
    """Compare: ``key`` holds ``value`` (false for an absent key)."""
    return {"key": b64(key), "target": "VALUE", "value": b64(value), "result": "EQUAL"}


def bound_to(key: str, lease: int) -> Json:
    """Compare: ``key`` is attached to ``lease``."""
    return {"key": b64(key), "target": "LEASE", "lease": lease, "result": "EQUAL"}


def unchanged(key: str, mod_revision: int) -> Json:
    """Compare: ``key`` was last written at ``mod_revision`` (0: it does not exist)."""
    return {"key": b64(key), "target": "MOD", "mod_revision": mod_revision, "result": "EQUAL"}


def kvs_of(response: Json) -> list[Json]:
    """The records of one ``response_range`` in a transaction's replies."""
    return list(response.get("response_range", {}).get("kvs", []))

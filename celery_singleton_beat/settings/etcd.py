"""The etcd settings (``singleton_beat_etcd_*``): the members, etcd's own user, TLS files and
the time one member may take; read with the other settings and checked at start-up."""

from __future__ import annotations

import os
import urllib.parse
from typing import Any, NamedTuple

from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.settings import validate

ENDPOINTS_ACCEPTED = (
    "a list of etcd client URLs such as ['http://etcd-1:2379', 'http://etcd-2:2379', "
    "'http://etcd-3:2379'] (https:// with TLS), or one comma-separated string; every "
    "member of the cluster, each with a host and a port and nothing after it"
)


class EtcdSettings(NamedTuple):
    """How the etcd store and lock reach the cluster."""

    endpoints: tuple[str, ...]
    timeout: float
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def endpoints(value: Any) -> tuple[str, ...]:
    """The members named by ``singleton_beat_etcd_endpoints``; ConfigurationError if any
    is not an http(s) URL of a host and a port."""
    name = "singleton_beat_etcd_endpoints"
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigurationError(name, value, ENDPOINTS_ACCEPTED)
    for url in value:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.path.strip("/")
            or parts.query
            or _port(parts) is None
        ):
            raise ConfigurationError(name, url, ENDPOINTS_ACCEPTED)
    if len(set(value)) != len(value):
        raise ConfigurationError(name, value, f"{ENDPOINTS_ACCEPTED}, each once")
    return tuple(u.rstrip("/") for u in value)


def _port(parts: urllib.parse.SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def etcd_settings(values: dict[str, Any], claim_ttl: float) -> EtcdSettings:
    """The etcd settings among ``values`` (each ``singleton_beat_etcd_*`` without its
    prefix), checked: the store or the lock is used with them."""
    found = EtcdSettings(
        endpoints(values.get("etcd_endpoints")),
        validate.positive_seconds("singleton_beat_etcd_timeout", values["etcd_timeout"]),
        *(_text(values, key) for key in ("etcd_username", "etcd_password")),
        *(_file(values, key) for key in ("etcd_ca_file", "etcd_cert_file", "etcd_key_file")),
    )
    if (found.username is None) != (found.password is None):
        given = "etcd_username" if found.password is None else "etcd_password"
        raise ConfigurationError(
            f"singleton_beat_{given}",
            "***" if given == "etcd_password" else found.username,
            "set together with singleton_beat_etcd_"
            f"{'password' if given == 'etcd_username' else 'username'} (etcd's user), or neither",
        )
    if (found.cert_file is None) != (found.key_file is None):
        raise ConfigurationError(
            "singleton_beat_etcd_cert_file",
            found.cert_file,
            "set together with singleton_beat_etcd_key_file (a client certificate and its "
            "key), or neither",
        )
    if found.timeout * 4 > claim_ttl:
        raise ConfigurationError(
            "singleton_beat_etcd_timeout",
            found.timeout,
            f"a number of seconds at most a quarter of singleton_beat_claim_ttl ({claim_ttl})",
        )
    return found


def _text(values: dict[str, Any], key: str) -> str | None:
    value = values.get(key)
    if value is None or (isinstance(value, str) and value):
        return value
    shown = "***" if key.endswith("password") else value
    raise ConfigurationError(f"singleton_beat_{key}", shown, "a non-empty string, or None")


def _file(values: dict[str, Any], key: str) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not os.path.isfile(value):
        raise ConfigurationError(
            f"singleton_beat_{key}", value, "the path of a PEM file that exists on this host"
        )
    return value

"""The ZooKeeper store's settings, in kazoo's own terms, checked at start-up.

- ``singleton_beat_zookeeper_hosts``: kazoo's ``hosts``, ``"zk1:2181,zk2:2181,zk3:2181"``
  (a list of ``"host:port"`` too), optionally ending in a chroot (``".../apps/beat"``).
- ``singleton_beat_zookeeper_chroot``: the chroot, when not written in the hosts.
- ``singleton_beat_zookeeper_options``: keyword arguments of ``KazooClient``: ``timeout``
  (the session timeout, s), ``auth_data`` (``[("digest", "user:password")]``),
  ``connection_retry`` (``KazooRetry`` arguments; by default kazoo reconnects forever, at
  most a second apart), ``use_ssl``, ``ca``,
  ``certfile``, ``keyfile``, ``keyfile_password``, ``verify_certs``, ``check_hostname``,
  ``sasl_options``, ``randomize_hosts``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from celery_singleton_beat.errors import ConfigurationError

__all__ = [
    "HOSTS_ACCEPTED",
    "ZooKeeperSettings",
    "root_path",
    "shown_options",
    "zookeeper_settings",
]

HOSTS_ACCEPTED = (
    "kazoo's hosts: 'host:port' or several joined by commas ('zk1:2181,zk2:2181,zk3:2181'), "
    "or a list of them, optionally ending in a chroot ('zk1:2181,zk2:2181/apps/beat')"
)
CHROOT_ACCEPTED = "a znode path such as '/apps/beat' (starts with '/', no trailing '/')"
RETRY_KEYS = frozenset({"max_tries", "delay", "backoff", "max_jitter", "max_delay", "deadline"})
OPTION_KINDS: dict[str, tuple[type, ...]] = {
    "timeout": (int, float),
    "auth_data": (list, tuple),
    "connection_retry": (dict,),
    "use_ssl": (bool,),
    "ca": (str,),
    "certfile": (str,),
    "keyfile": (str,),
    "keyfile_password": (str,),
    "verify_certs": (bool,),
    "check_hostname": (bool,),
    "sasl_options": (dict,),
    "randomize_hosts": (bool,),
}
OPTIONS_ACCEPTED = (
    "a dict of KazooClient keyword arguments: " + ", ".join(sorted(OPTION_KINDS))
    + " (e.g. {'timeout': 10, 'auth_data': [('digest', 'user:password')]})"
)  # fmt: skip
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$")


@dataclasses.dataclass(frozen=True)
class ZooKeeperSettings:
    """Where the ensemble is and how kazoo reaches it."""

    hosts: str
    """kazoo's ``hosts``, the chroot included."""
    options: dict[str, Any]
    """``KazooClient`` keyword arguments."""

    @property
    def shown_hosts(self) -> str:
        """The hosts for log lines (they hold no password: credentials are in options)."""
        return self.hosts


def root_path(key_prefix: str) -> str:
    """The znode everything is kept under: ``singleton_beat_key_prefix`` as a path
    (``"singleton-beat:"`` -> ``/singleton-beat``)."""
    return "/" + (key_prefix.rstrip(":").replace("/", "-") or "singleton-beat")


def zookeeper_settings(hosts: Any, chroot: Any = None, options: Any = None) -> ZooKeeperSettings:
    """The settings checked: ConfigurationError names the setting, value and accepted form."""
    joined = _hosts(hosts)
    if chroot is not None:
        if not isinstance(chroot, str) or not re.fullmatch(r"(/[^/\s]+)+", chroot):
            raise ConfigurationError("singleton_beat_zookeeper_chroot", chroot, CHROOT_ACCEPTED)
        if "/" in joined:
            raise ConfigurationError(
                "singleton_beat_zookeeper_chroot",
                chroot,
                f"unset when singleton_beat_zookeeper_hosts ends in a chroot already ({joined!r})",
            )
        joined += chroot
    return ZooKeeperSettings(joined, _options(options))


def _hosts(hosts: Any) -> str:
    name = "singleton_beat_zookeeper_hosts"
    if isinstance(hosts, (list, tuple)) and hosts and all(isinstance(h, str) for h in hosts):
        text = ",".join(hosts)
    elif isinstance(hosts, str) and hosts:
        text = hosts
    else:
        raise ConfigurationError(name, hosts, HOSTS_ACCEPTED)
    servers, slash, chroot = text.partition("/")
    if slash and not re.fullmatch(r"(/[^/\s]+)+", slash + chroot):
        raise ConfigurationError(name, hosts, HOSTS_ACCEPTED)
    for host in servers.split(","):
        match = _HOST.match(host.strip())
        port = match.group(2) if match else None
        if match is None or (port is not None and not 0 < int(port[1:]) <= 65535):
            raise ConfigurationError(name, hosts, HOSTS_ACCEPTED + f"; {host!r} is not host:port")
    return text.replace(" ", "")


def _options(options: Any) -> dict[str, Any]:
    name = "singleton_beat_zookeeper_options"
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(name, type(options).__name__, OPTIONS_ACCEPTED)
    found = dict(options)
    for key, value in found.items():
        kinds = OPTION_KINDS.get(key)
        if kinds is None or isinstance(value, bool) is not (bool in kinds):
            raise ConfigurationError(f"{name}[{key!r}]", _shown(key, value), OPTIONS_ACCEPTED)
        if not isinstance(value, kinds):
            raise ConfigurationError(f"{name}[{key!r}]", _shown(key, value), OPTIONS_ACCEPTED)
    if "timeout" in found and not found["timeout"] > 0:
        raise ConfigurationError(
            f"{name}['timeout']", found["timeout"], "a positive number of seconds"
        )
    for pair in found.get("auth_data", ()):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(p, str) for p in pair)):  # fmt: skip
            raise ConfigurationError(
                f"{name}['auth_data']", "...", "a list of (scheme, credential) string pairs"
            )
    found["auth_data"] = [tuple(pair) for pair in found.get("auth_data", ())] or None
    for key in ("connection_retry",):
        unknown = set(found.get(key) or ()) - RETRY_KEYS
        if unknown:
            raise ConfigurationError(
                f"{name}[{key!r}]", sorted(unknown), "KazooRetry arguments: "
                + ", ".join(sorted(RETRY_KEYS))
            )  # fmt: skip
    return found


SECRET_OPTIONS = ("auth_data", "keyfile_password", "sasl_options")


def _shown(key: str, value: Any) -> Any:
    """A value fit for an error message (no credential)."""
    return "***" if key in SECRET_OPTIONS else value


def shown_options(options: Any) -> Any:
    """``singleton_beat_zookeeper_options`` as settings listings show it: credentials
    (``auth_data``, ``keyfile_password``, ``sasl_options``) as ``***``."""
    if not isinstance(options, Mapping):
        return options
    return {key: _shown(key, value) for key, value in options.items()}

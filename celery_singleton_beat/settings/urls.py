"""Redis URLs: checked as settings (:func:`master_urls`), and shown with their secrets hidden.

kombu's ``maybe_sanitize_url`` parses the URL first, so a password holding an unencoded
``/``, ``#`` or ``?`` (common in generated secrets) makes it raise an error that quotes a
piece of the password. These functions never parse and never raise: everything between
``scheme://`` and the *last* ``@`` is user information (a host cannot hold an ``@``), and
``password=`` query values are hidden too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from celery_singleton_beat._compat import parse_redis_url
from celery_singleton_beat.errors import ConfigurationError

MASK = "***"

_QUERY_SECRET = re.compile(r"(?i)((?:^|[?&;])[^=&;#]*pass[^=&;#]*=)[^&;]*")


def safe_url(url: object) -> str:
    """``url`` with its user information and ``password=`` values replaced by ``***``."""
    try:
        text = url.decode("utf-8", "replace") if isinstance(url, bytes) else str(url)
    except Exception:
        return f"<{type(url).__name__}>"
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    if "@" in rest:
        rest = f"{MASK}@{rest.rpartition('@')[2]}"
    rest = _QUERY_SECRET.sub(rf"\g<1>{MASK}", rest)
    return f"{scheme}{separator}{rest}"


def safe_value(value: Any) -> Any:
    """A setting's value fit for an error message: URLs (also inside lists, tuples and
    sets) through :func:`safe_url`; numbers, booleans and None as they are; anything else
    by its type name only."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (str, bytes)):
        return safe_url(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [safe_value(item) for item in value]
        if isinstance(value, (set, frozenset)):
            return set(map(str, items))
        return type(value)(items) if isinstance(value, list) else tuple(items)
    return f"<{type(value).__name__}>"


MASTER_URL_FORM = (
    "a redis:// or rediss:// URL such as redis://[user:password@]host:6379/0, or one node "
    "of a Redis Cluster with ?cluster=true (redis://host:6379?cluster=true), with a "
    "password holding / # ? @ or % percent-encoded (urllib.parse.quote(password, safe=''))"
)

#: ``cluster=`` values, as redis-py reads a boolean in a URL's query.
_CLUSTER_VALUES = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class MasterURL(NamedTuple):
    """One member as a setting names it: its URL, ``host:port`` (or socket path),
    redis-py's connection options for it, and whether it is a Redis Cluster (the URL of
    one of its nodes with ``?cluster=true``; ``cluster`` is not among the options)."""

    url: str
    name: str
    options: dict[str, Any]
    cluster: bool = False

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)


def redis_options(url: str) -> dict[str, Any] | None:
    """redis-py's reading of ``url``, or None when it cannot be read as written.

    A password with an unencoded ``/``, ``#`` or ``?`` ends the host part early: the URL
    would point at another host (or fail with an error quoting the password), so it is
    refused here, before anything echoes it.
    """
    try:
        parts = urlsplit(url)
        if "@" in url[len(parts.scheme) + 3 + len(parts.netloc) :]:
            return None
        return parse_redis_url(url)
    except (ValueError, TypeError):
        return None


def master_url(url: str) -> MasterURL:
    """One master's URL read, or ConfigurationError naming it (password hidden)."""
    options = redis_options(url)
    if options is None:
        raise ConfigurationError("redis URL", safe_url(url), MASTER_URL_FORM)
    cluster = _cluster_flag(url, options.pop("cluster", "false"))
    if "path" in options:
        name = str(options["path"])
    else:
        name = f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
    if cluster:
        if "path" in options:
            raise ConfigurationError(
                "redis URL", safe_url(url), f"{MASTER_URL_FORM}: a cluster is reached over TCP"
            )
        if options.get("db", 0) != 0:
            raise ConfigurationError(
                "redis URL",
                safe_url(url),
                "the URL of a cluster node with no database number on a Redis Cluster (it has "
                "database 0 only: SELECT is not allowed in cluster mode), such as "
                "redis://host:6379?cluster=true",
            )
        options.pop("db", None)
        name = f"{name} (cluster)"
    return MasterURL(url, name, options, cluster)


def _cluster_flag(url: str, value: Any) -> bool:
    flag = _CLUSTER_VALUES.get(str(value).lower())
    if flag is None:
        raise ConfigurationError(
            "redis URL",
            safe_url(url),
            "cluster=true for one node of a Redis Cluster (or cluster=false, the default)",
        )
    return flag


def master_urls(urls: Iterable[str] | str) -> list[MasterURL]:
    """The masters ``urls`` name (a list, or one comma-separated string), refusing an
    empty list, bad URLs and a master given twice."""
    if isinstance(urls, str):
        urls = [u.strip() for u in urls.split(",") if u.strip()]
    urls = list(urls)
    if not urls:
        raise ConfigurationError("urls", urls, f"give at least one master, as {MASTER_URL_FORM}")
    masters = []
    for url in urls:
        if not isinstance(url, str) or url.partition("://")[0] not in ("redis", "rediss", "unix"):
            raise ConfigurationError("redis URL", safe_value(url), MASTER_URL_FORM)
        masters.append(master_url(url))
    seen: set[str] = set()
    for master in masters:
        if master.name in seen:
            raise ConfigurationError(
                "urls",
                [m.safe_url for m in masters],
                f"each master must be a distinct host:port, and {master.name} is given twice; "
                f"Redlock needs independent masters, so a repeated one would count twice",
            )
        seen.add(master.name)
    return masters


def without_cluster_flag(url: str) -> str:
    """``url`` without its ``cluster=`` query parameter, as redis-py's ``RedisCluster``
    takes it."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "cluster"]
    return urlunsplit(parts._replace(query=urlencode(query)))

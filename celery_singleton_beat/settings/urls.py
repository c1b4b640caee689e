"""Redis URLs: checked as settings (:func:`master_urls`), and shown with their secrets hidden.

A member of the Redis settings is one of:

- a ``redis://``, ``rediss://`` or ``unix://`` URL: one server (a standalone master, or an
  endpoint whose server changes on failover);
- a Sentinel-managed primary, written as Celery writes a Sentinel broker: every Sentinel
  of the primary, ``sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379/0``, with
  the name the Sentinels know the primary by (``master_name``), their own connection
  options (``sentinel_kwargs``) and ``min_other_sentinels`` in transport options, as in
  ``broker_transport_options`` (see :class:`RedisOptions`).

kombu's ``maybe_sanitize_url`` parses the URL first, so a password holding an unencoded
``/``, ``#`` or ``?`` (common in generated secrets) makes it raise an error that quotes a
piece of the password. :func:`safe_url` never parses and never raises: everything between
``scheme://`` and the *last* ``@`` is user information (a host cannot hold an ``@``), and
``password=`` query values are hidden too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from celery_singleton_beat._compat import parse_redis_url
from celery_singleton_beat.errors import ConfigurationError

MASK = "***"
SENTINEL_PORT = 26379

_QUERY_SECRET = re.compile(r"(?i)((?:^|[?&;])[^=&;#]*pass[^=&;#]*=)[^&;]*")


def safe_url(url: object) -> str:
    """``url`` with its user information and ``password=`` values replaced by ``***``
    (each URL of a Sentinel member's ``;``-separated list on its own)."""
    try:
        text = url.decode("utf-8", "replace") if isinstance(url, bytes) else str(url)
    except Exception:
        return f"<{type(url).__name__}>"
    if text.startswith(f"{SENTINEL}://") and ";" in text:
        return ";".join(_safe_one(part) for part in text.split(";"))
    return _safe_one(text)


def _safe_one(text: str) -> str:
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


SENTINEL = "sentinel"
SENTINEL_FORM = (
    "sentinel://host1:26379;sentinel://host2:26379;sentinel://host3:26379/0 (every "
    "Sentinel of one primary, separated by ';', as Celery's broker_url names them) with "
    "the primary's master_name in singleton_beat_redis_transport_options"
)
MASTER_URL_FORM = (
    "a redis:// or rediss:// URL such as redis://[user:password@]host:6379/0, or one node "
    "of a Redis Cluster with ?cluster=true (redis://host:6379?cluster=true), with a "
    "password holding / # ? @ or % percent-encoded (urllib.parse.quote(password, safe=''))"
)
MEMBER_FORM = f"{MASTER_URL_FORM}; or a Sentinel-managed primary as {SENTINEL_FORM}"
_ENCODED = "a password holding / # ? @ or % percent-encoded"
#: Schemes other tools give Sentinel URLs; Celery's own form is asked for instead.
FOREIGN_SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel", "redis-sentinel")
TRANSPORT_OPTIONS = "singleton_beat_redis_transport_options"
TRANSPORT_OPTIONS_FORM = (
    "a dict as Celery's broker_transport_options: {'master_name': 'mymaster'} (the name the "
    "Sentinels know the primary by), optionally 'sentinel_kwargs' (a dict of redis-py "
    "connection options for the Sentinels themselves, such as {'password': ...}) and "
    "'min_other_sentinels' (an integer >= 0); left unset, it is broker_transport_options "
    "when the Redis URLs are the broker's"
)
USE_SSL = "singleton_beat_redis_use_ssl"
USE_SSL_FORM = (
    "None, True, or a dict of redis-py TLS options as Celery's broker_use_ssl, such as "
    "{'ssl_cert_reqs': ssl.CERT_REQUIRED, 'ssl_ca_certs': '/etc/ssl/ca.pem'}"
)


class SentinelSpec(NamedTuple):
    """A Sentinel-managed primary: the Sentinels to ask and the name they know it by."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    sentinel_kwargs: dict[str, Any]
    min_other_sentinels: int


#: ``cluster=`` values, as redis-py reads a boolean in a URL's query.
_CLUSTER_VALUES = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class MasterURL(NamedTuple):
    """One member as a setting names it: its URL, its name (``host:port``, a socket path,
    or ``master_name@sentinel,…`` for a Sentinel-managed primary), redis-py's connection
    options for it, and whether it is a Redis Cluster (the URL of one of its nodes with
    ``?cluster=true``; ``cluster`` is not among the options)."""

    url: str
    name: str
    options: dict[str, Any]
    sentinel: SentinelSpec | None = None
    """Where a Sentinel-managed primary is found (None: the URL's own server)."""
    cluster: bool = False
    """A Redis Cluster, found from the node of the URL."""

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)


@dataclasses.dataclass(frozen=True)
class RedisOptions:
    """How the members are reached besides their URLs, in Celery's own settings' forms:
    ``transport_options`` as ``broker_transport_options`` (``master_name``,
    ``sentinel_kwargs`` and ``min_other_sentinels`` are read, for Sentinel members; the
    broker's other options are for its queues and are not read), ``use_ssl`` as
    ``broker_use_ssl`` (TLS on every member)."""

    transport_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    use_ssl: Any = None

    def validate(self) -> None:
        """Refuse options of the wrong shape, naming the setting."""
        options = self.transport_options
        if not isinstance(options, Mapping):
            raise ConfigurationError(TRANSPORT_OPTIONS, safe_value(options), TRANSPORT_OPTIONS_FORM)
        name = options.get("master_name")
        kwargs = options.get("sentinel_kwargs")
        others = options.get("min_other_sentinels", 0)
        if (
            (name is not None and (not isinstance(name, str) or not name))
            or (kwargs is not None and not isinstance(kwargs, Mapping))
            or isinstance(others, bool)
            or not isinstance(others, int)
            or others < 0
        ):
            raise ConfigurationError(
                TRANSPORT_OPTIONS, shown_options(options), TRANSPORT_OPTIONS_FORM
            )
        ssl = self.use_ssl
        if not (
            ssl is None
            or isinstance(ssl, bool)
            or (isinstance(ssl, Mapping) and all(str(k).startswith("ssl_") for k in ssl))
        ):
            raise ConfigurationError(USE_SSL, shown_options(ssl), USE_SSL_FORM)

    def tls(self) -> dict[str, Any] | None:
        """redis-py's TLS options for every member, None without TLS."""
        if not self.use_ssl:
            return None
        return dict(self.use_ssl) if isinstance(self.use_ssl, Mapping) else {}


def shown_options(value: Any) -> Any:
    """A dict of options fit for an error message: its keys, and its values through
    :func:`safe_value` (a password is a string: shown as ``***``)."""
    if not isinstance(value, Mapping):
        return safe_value(value)
    return {
        key: (
            shown_options(v)
            if isinstance(v, Mapping)
            else MASK
            if "pass" in str(key)
            else safe_value(v)
        )
        for key, v in value.items()
    }


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


def master_url(url: str, options: RedisOptions | None = None) -> MasterURL:
    """One member's URL read, or ConfigurationError naming it (password hidden)."""
    given = options or RedisOptions()
    if url.startswith(f"{SENTINEL}://"):
        return sentinel_url(url, given)
    found = redis_options(url)
    if found is None:
        raise ConfigurationError("redis URL", safe_url(url), MASTER_URL_FORM)
    cluster = _cluster_flag(url, found.pop("cluster", "false"))
    if "path" in found:
        name = str(found["path"])
    else:
        name = f"{found.get('host', 'localhost')}:{found.get('port', 6379)}"
        tls = given.tls()
        if tls is not None:
            found.update(tls, connection_class=_ssl_connection())
    if cluster:
        if "path" in found:
            raise ConfigurationError(
                "redis URL", safe_url(url), f"{MASTER_URL_FORM}: a cluster is reached over TCP"
            )
        if found.get("db", 0) != 0:
            raise ConfigurationError(
                "redis URL",
                safe_url(url),
                "the URL of a cluster node with no database number on a Redis Cluster (it has "
                "database 0 only: SELECT is not allowed in cluster mode), such as "
                "redis://host:6379?cluster=true",
            )
        found.pop("db", None)
        name = f"{name} (cluster)"
    return MasterURL(url, name, found, cluster=cluster)


def _cluster_flag(url: str, value: Any) -> bool:
    flag = _CLUSTER_VALUES.get(str(value).lower())
    if flag is None:
        raise ConfigurationError(
            "redis URL",
            safe_url(url),
            "cluster=true for one node of a Redis Cluster (or cluster=false, the default)",
        )
    return flag


def sentinel_url(url: str, options: RedisOptions) -> MasterURL:
    """A Sentinel-managed primary: ``sentinel://h1:26379;sentinel://h2:26379/0``.

    The database, user and password (of the primary, as for Celery's broker) may be
    written on any of the URLs; URLs that give different ones are refused.
    """
    sentinels: list[tuple[str, int]] = []
    given: dict[str, Any] = {}
    for part in (p.strip() for p in url.split(";")):
        if not part.startswith(f"{SENTINEL}://"):
            raise ConfigurationError("redis URL", safe_url(url), SENTINEL_FORM)
        read = redis_options(f"redis://{part[len(SENTINEL) + 3 :]}")
        if read is None or not read.get("host"):
            raise ConfigurationError("redis URL", safe_url(url), f"{SENTINEL_FORM}, {_ENCODED}")
        sentinels.append((str(read["host"]), urlsplit(part).port or SENTINEL_PORT))
        for key in ("db", "username", "password"):
            if read.get(key) is not None and given.setdefault(key, read[key]) != read[key]:
                raise ConfigurationError(
                    "redis URL", safe_url(url),
                    f"one {key} for the primary: the URLs of one Sentinel member name the "
                    f"same primary, as {SENTINEL_FORM}",
                )  # fmt: skip
    transport = options.transport_options
    name = transport.get("master_name")
    if not name:
        raise ConfigurationError(
            TRANSPORT_OPTIONS, shown_options(transport), TRANSPORT_OPTIONS_FORM
        )
    spec = SentinelSpec(
        tuple(sentinels), str(name), dict(transport.get("sentinel_kwargs") or {}),
        int(transport.get("min_other_sentinels", 0)),
    )  # fmt: skip
    tls = options.tls()
    if tls is not None:
        given.update(tls, ssl=True)
    listed = ",".join(f"{host}:{port}" for host, port in sorted(set(sentinels)))
    return MasterURL(url, f"{name}@{listed}", given, spec)


def _ssl_connection() -> type:
    from redis.connection import SSLConnection  # noqa: PLC0415

    return SSLConnection


def master_urls(urls: Iterable[str] | str, options: RedisOptions | None = None) -> list[MasterURL]:
    """The members ``urls`` name (a list, or one comma-separated string), refusing an
    empty list, bad URLs and a member given twice."""
    if isinstance(urls, str):
        urls = [u.strip() for u in urls.split(",") if u.strip()]
    urls = list(urls)
    if not urls:
        raise ConfigurationError("urls", urls, f"give at least one master, as {MASTER_URL_FORM}")
    given = options or RedisOptions()
    given.validate()
    masters = []
    for url in urls:
        scheme = url.partition("://")[0] if isinstance(url, str) else ""
        if scheme in FOREIGN_SENTINEL_SCHEMES:
            raise ConfigurationError(
                "redis URL", safe_value(url),
                f"Celery's form of a Sentinel-managed primary, {SENTINEL_FORM} "
                f"({scheme}:// is another library's)",
            )  # fmt: skip
        if scheme not in ("redis", "rediss", "unix", SENTINEL):
            raise ConfigurationError("redis URL", safe_value(url), MEMBER_FORM)
        masters.append(master_url(url, given))
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

"""The library's settings, read once from ``app.conf`` into one frozen, validated object.

Every setting is a lowercase Celery key starting with ``singleton_beat_`` (with Django and
``config_from_object(..., namespace="CELERY")``: ``CELERY_SINGLETON_BEAT_*``). A bad value
fails here, at start-up, with the setting's name, the value and the accepted form.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from celery.app.defaults import DEFAULTS as CELERY_SETTINGS

from celery_singleton_beat.core.schema import Keys, Mode, StoreKind
from celery_singleton_beat.errors import ConfigurationError, UnknownSetting
from celery_singleton_beat.settings import defaults, validate
from celery_singleton_beat.settings.etcd import EtcdSettings, etcd_settings
from celery_singleton_beat.settings.urls import (
    SENTINEL,
    MasterURL,
    RedisOptions,
    master_urls,
    safe_url,
    safe_value,
    shown_options,
)
from celery_singleton_beat.settings.zookeeper import (
    ZooKeeperSettings,
    root_path,
    zookeeper_settings,
)
from celery_singleton_beat.settings.zookeeper import shown_options as shown_zookeeper_options

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

MODES = tuple(m.value for m in Mode)
_PACKAGE = __name__.partition(".")[0]
#: Valid masters standing in for bad ones while :meth:`Config.errors` checks the rest.
_STAND_IN_URLS = ("redis://127.0.0.1:6379/0",)


class RedisMembers:
    """The Redis members a settings object names (its ``redis_urls``) and how they are
    reached (its ``redis_transport_options`` and ``redis_use_ssl``)."""

    redis_urls: tuple[str, ...]
    redis_transport_options: Any
    redis_use_ssl: Any

    def redis_options(self) -> RedisOptions:
        """How the Redis members are reached besides their URLs."""
        return RedisOptions(self.redis_transport_options or {}, self.redis_use_ssl)

    def members(self) -> list[MasterURL]:
        """The Redis members, read."""
        return master_urls(self.redis_urls, self.redis_options())


@dataclasses.dataclass(frozen=True)
class Config(RedisMembers):
    """Validated settings; build it with :meth:`from_conf`. Defaults are the documented ones."""

    redis_urls: tuple[str, ...]
    mode: str = defaults.MODE
    store: str = defaults.STORE
    """Where replicas share the schedule: 'redis', 'database' or a dotted path."""
    database: str = defaults.DATABASE
    """The Django database alias of the 'database' store."""
    sqlalchemy_url: str | None = None
    """The SQLAlchemy URL of the 'sqlalchemy' store (default: ``beat_dburi``)."""
    zookeeper_hosts: Any = None
    zookeeper_chroot: Any = None
    zookeeper_options: Any = None
    """The 'zookeeper' store's ensemble, in kazoo's terms (see settings.zookeeper)."""
    etcd_endpoints: Any = None
    """The etcd members of the 'etcd' store (see :mod:`celery_singleton_beat.settings.etcd`)."""
    etcd_timeout: float = defaults.ETCD_TIMEOUT
    etcd_username: str | None = None
    etcd_password: str | None = None
    etcd_ca_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    lease_ttl: float = defaults.LEASE_TTL
    claim_ttl: float = defaults.CLAIM_TTL
    share_grace: float = defaults.SHARE_GRACE
    """How late another live replica's slot is when this one claims it (0: no share-out)."""
    publish_timeout: float = defaults.PUBLISH_TIMEOUT
    fence_retention: float = defaults.SLOT_RETENTION
    misfire_grace: float = defaults.MISFIRE_GRACE
    key_prefix: str = defaults.KEY_PREFIX
    node_timeout: float = defaults.NODE_TIMEOUT
    health_port: int | None = None
    health_host: str = "0.0.0.0"
    schedule_source: Any = "beat_schedule"
    """A source name or dotted path, or a list of them (see celery_singleton_beat.sources)."""
    redis_transport_options: Any = None
    """Celery transport options of Sentinel members (None: ``broker_transport_options``
    when the Redis URLs are the broker's, else none)."""
    redis_use_ssl: Any = None
    """TLS as ``broker_use_ssl`` (None: ``broker_use_ssl`` when the URLs are the broker's)."""
    redis_min_replicas: Any = defaults.MIN_REPLICAS
    """Replicas that must acknowledge a write on a primary before it counts: ``"auto"``
    (as many as each primary reports) or a number."""

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> Config:
        """Read and check every ``singleton_beat_*`` setting of a Celery ``app.conf``."""
        refuse_unknown(conf)
        try:
            values = cls._values(conf)
            urls = _urls_for(values["store"], conf)
            config = cls(redis_urls=urls, **_from_broker(conf, urls, values))
            config.validate()
        except ConfigurationError as exc:
            raise as_written(conf, exc) from None
        return config

    @classmethod
    def _values(cls, conf: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name != "redis_urls":
                value = conf.get(f"singleton_beat_{f.name}")
                values[f.name] = f.default if value is None else value
        if values["sqlalchemy_url"] is None:
            values["sqlalchemy_url"] = conf.get("beat_dburi")
        if store_follows_source(conf):
            values["store"] = StoreKind.SQLALCHEMY.value
        return values

    @classmethod
    def errors(cls, conf: Mapping[str, Any]) -> list[ConfigurationError]:
        """Every bad setting at once (:meth:`from_conf` stops at the first): each one found
        is put back to its default and the rest checked again."""
        return cls.audited(conf)[0]

    @classmethod
    def audited(cls, conf: Mapping[str, Any]) -> tuple[list[ConfigurationError], Config | None]:
        """:meth:`errors`, and the settings with each refused one put back to its default
        (a misspelt name ignored), so that ``check`` audits the store and the schedule
        sources as far as they can still be read; None when no settings stand without a
        refused one (the Redis URLs refused: there is no master to check)."""
        found: list[ConfigurationError] = list(unknown_settings(conf))
        values = cls._values(conf)
        try:
            urls = _urls_for(values["store"], conf)
        except ConfigurationError as exc:
            found.append(exc)
            urls = _STAND_IN_URLS
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in values}
        put_back: set[str] = set()
        for _ in range(len(values) + 2):
            try:
                cls(redis_urls=urls, **_from_broker(conf, urls, values)).validate()
            except ConfigurationError as exc:
                name = exc.name.removeprefix("singleton_beat_")
                if name in put_back:  # its default needs what the bad value did not
                    break
                found.append(exc)
                if name == "redis_urls" and urls != _STAND_IN_URLS:
                    urls = _STAND_IN_URLS
                elif values.get(name, defaults.get(name)) != defaults.get(name):
                    values[name] = defaults[name]
                    put_back.add(name)
                    if name == "store":  # the default store, Redis, needs masters
                        urls = urls or _STAND_IN_URLS
                else:
                    break
            else:
                break
        return [as_written(conf, exc) for exc in found], _standing(cls, conf, urls, values)

    @property
    def settings(self) -> dict[str, Any]:
        """Each setting's full name and value (URLs and options with passwords hidden)."""
        values = dataclasses.asdict(self)
        values["redis_urls"] = [safe_url(u) for u in self.redis_urls]
        values["redis_transport_options"] = shown_options(self.redis_transport_options)
        values["redis_use_ssl"] = shown_options(self.redis_use_ssl)
        if self.sqlalchemy_url is not None:
            values["sqlalchemy_url"] = safe_url(self.sqlalchemy_url)
        values["zookeeper_options"] = shown_zookeeper_options(self.zookeeper_options)
        if self.etcd_password is not None:
            values["etcd_password"] = "***"
        return {f"singleton_beat_{k}": v for k, v in values.items()}

    @property
    def etcd(self) -> EtcdSettings:
        """The etcd settings, checked (ConfigurationError names the one refused)."""
        return etcd_settings(dataclasses.asdict(self), self.claim_ttl)

    def validate(self) -> None:
        if self.mode not in MODES:
            _refuse("mode", self.mode, "'active' (every replica evaluates) or 'leader'")
        for name in (
            "lease_ttl", "claim_ttl", "publish_timeout", "fence_retention", "misfire_grace",
            "node_timeout",
        ):  # fmt: skip
            _positive(name, getattr(self, name))
        grace = self.share_grace
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            _refuse(
                "share_grace",
                grace,
                "a number of seconds, 0 or more, such as 1.0 (0: every replica claims every "
                "slot when it falls due)",
            )
        if self.claim_ttl >= self.fence_retention:
            _refuse(
                "claim_ttl",
                self.claim_ttl,
                f"a number of seconds below singleton_beat_fence_retention "
                f"({self.fence_retention}): a fence must outlive its claim",
            )
        for name in ("claim_ttl", "lease_ttl"):
            if self.node_timeout * 4 > getattr(self, name):
                _refuse(
                    "node_timeout",
                    self.node_timeout,
                    f"a number of seconds at most a quarter of singleton_beat_{name} "
                    f"({getattr(self, name)})",
                )
        if not isinstance(self.key_prefix, str) or not self.key_prefix:
            _refuse("key_prefix", self.key_prefix, "a non-empty string such as 'singleton-beat:'")
        validate.port("singleton_beat_health_port", self.health_port)
        if not _bindable(self.health_host):
            _refuse(
                "health_host",
                self.health_host,
                "the address the health server binds: '0.0.0.0' (every IPv4 interface, the "
                "default), '::' (every interface), '127.0.0.1', or this host's IP or name",
            )
        source = self.schedule_source
        names = source if isinstance(source, (list, tuple)) else [source]
        if not names or not all(isinstance(n, str) and n for n in names):
            _refuse(
                "schedule_source",
                source,
                "'beat_schedule' (default), 'django_celery_beat', 'sqlalchemy_celery_beat', "
                "'runtime', the dotted path of a ScheduleSource subclass, or a list of these",
            )
        self._validate_store()

    def _validate_store(self) -> None:
        """The store's settings: its name, its database or its masters."""
        if not isinstance(self.database, str) or not self.database:
            _refuse("database", self.database, "a Django database alias such as 'default'")
        if self.store == StoreKind.SQLALCHEMY or self.sqlalchemy_url is not None:
            check_sqlalchemy_url(self.sqlalchemy_url)
        if self.store == StoreKind.ZOOKEEPER or self.zookeeper_hosts is not None:
            self.zookeeper()
        if self.store == StoreKind.ETCD or self.etcd_endpoints is not None:
            _ = self.etcd
        if self.store not in tuple(StoreKind):
            dotted("singleton_beat_store", self.store, STORE_ACCEPTED)
        validate.min_replicas("singleton_beat_redis_min_replicas", self.redis_min_replicas)
        if self.store != StoreKind.REDIS and not self.redis_urls:
            return
        try:
            members = self.members()
        except ConfigurationError as exc:
            raise _named(exc, "singleton_beat_redis_urls") from None
        Keys(self.key_prefix, hash_tags=any(m.cluster for m in members))

    def zookeeper(self) -> ZooKeeperSettings:
        """The ZooKeeper ensemble of the 'zookeeper' store and lock, checked."""
        return zookeeper_settings(
            self.zookeeper_hosts, self.zookeeper_chroot, self.zookeeper_options
        )

    def zookeeper_root(self) -> str:
        """The znode the library keeps everything under: the key prefix as a path."""
        return root_path(self.key_prefix)


def _standing(
    cls: type[Config], conf: Mapping[str, Any], urls: tuple[str, ...], values: dict[str, Any]
) -> Config | None:
    """The settings :meth:`Config.audited` ended with, if they are valid and name no
    stand-in master."""
    if urls == _STAND_IN_URLS and urls != _urls_or_none(values["store"], conf):
        return None
    config = cls(redis_urls=urls, **_from_broker(conf, urls, values))
    try:
        config.validate()
    except ConfigurationError:
        return None
    return config


def _urls_or_none(store: Any, conf: Mapping[str, Any]) -> tuple[str, ...] | None:
    try:
        return _urls_for(store, conf)
    except ConfigurationError:
        return None


def _named(exc: ConfigurationError, setting: str) -> ConfigurationError:
    """A URL's error under the setting that holds the URL (an option's keeps its name)."""
    if exc.name.startswith("singleton_beat_"):
        return exc
    return ConfigurationError(setting, exc.value, exc.accepted)


def _from_broker(
    conf: Mapping[str, Any], urls: tuple[str, ...], values: dict[str, Any]
) -> dict[str, Any]:
    """``values`` with the broker's transport options and TLS where unset and the Redis
    URLs are the broker's (a Sentinel broker's master_name, for one)."""
    if urls != (conf.get("broker_url"),):
        return values
    found = dict(values)
    if found.get("redis_transport_options") is None:
        found["redis_transport_options"] = conf.get("broker_transport_options")
    if found.get("redis_use_ssl") is None:
        found["redis_use_ssl"] = conf.get("broker_use_ssl") or None
    return found


def _urls_for(store: Any, conf: Mapping[str, Any]) -> tuple[str, ...]:
    """The Redis URLs: required by the Redis store; a store other than Redis may still be
    given some (none needed)."""
    if store != StoreKind.REDIS and conf.get("singleton_beat_redis_urls") is None:
        return ()
    return _redis_urls(conf)


#: The schedule source whose tables' database the slot store follows (see below).
SOURCE_WITH_DATABASE = "sqlalchemy_celery_beat"
#: The task lock backend that follows the slot store onto that database.
SQLALCHEMY_TASK_BACKEND = "celery_singleton_beat.locks.sqlalchemy.from_app"


def store_follows_source(conf: Mapping[str, Any]) -> bool:
    """Whether the slot store is the SQLAlchemy store though ``singleton_beat_store`` is
    unset: sqlalchemy-celery-beat's tables are a schedule source (their database, at
    ``beat_dburi``, is there to hold the replicas' state too) and no Redis master is named,
    neither in ``singleton_beat_redis_urls`` nor as a Redis or Sentinel broker. The task
    locks (the slots' "ran" marks included) then follow it, unless
    ``singleton_beat_task_backend`` or ``singleton_beat_task_redis_urls`` names others.

    Where a master is named the store stays Redis, as it was before the store followed
    the source: a rolling upgrade never has two replicas on two stores, each sending.
    """
    if conf.get("singleton_beat_store") is not None:
        return False
    if conf.get("singleton_beat_redis_urls") is not None:
        return False
    broker = conf.get("broker_url")
    if isinstance(broker, str) and broker.startswith(("redis://", "rediss://", f"{SENTINEL}://")):
        return False
    source = conf.get("singleton_beat_schedule_source")
    names = source if isinstance(source, (list, tuple)) else [source]
    return SOURCE_WITH_DATABASE in names


def store_reason(conf: Mapping[str, Any]) -> str | None:
    """Which slot store beat runs on and why, when no setting names it (else None): the
    start-up banner and ``check`` say it, so that an operator who set no store sees it."""
    if not store_follows_source(conf):
        return None
    named = conf.get("singleton_beat_sqlalchemy_url")
    database = written_name(conf, "singleton_beat_sqlalchemy_url" if named else "beat_dburi")
    return (
        f"slot store 'sqlalchemy' on the database of {database}: "
        f"{written_name(conf, 'singleton_beat_store')} is unset, no Redis master is named, "
        f"and {written_name(conf, 'singleton_beat_schedule_source')} reads "
        f"sqlalchemy-celery-beat's tables from a database"
    )


def _redis_urls(conf: Mapping[str, Any]) -> tuple[str, ...]:
    urls = conf.get("singleton_beat_redis_urls")
    if urls is None:
        broker = conf.get("broker_url") or ""
        if isinstance(broker, str) and broker.startswith(("redis://", "rediss://")):
            _warn_broker_master(conf, broker)
            try:
                master_urls([broker])
            except ConfigurationError as exc:
                raise ConfigurationError(
                    "broker_url (the lock master while singleton_beat_redis_urls is unset)",
                    exc.value,
                    exc.accepted,
                ) from None
            return (broker,)
        if isinstance(broker, str) and broker.startswith(f"{SENTINEL}://"):
            return (broker,)  # read with the broker's transport options (see validate)
        _refuse(
            "redis_urls",
            None,
            "a list of redis:// URLs of independent masters (or one comma-separated "
            "string); it may be left unset only when broker_url is a Redis or Sentinel URL",
        )
    if isinstance(urls, str):
        return tuple(u.strip() for u in urls.split(",") if u.strip())
    if not isinstance(urls, (list, tuple)):
        _refuse(
            "redis_urls",
            safe_value(urls),
            "a list of redis:// URLs or one comma-separated string (not a set, which has "
            "no order: every replica must list the masters alike)",
        )
    return tuple(urls)


def _bindable(host: Any) -> bool:
    if not isinstance(host, str) or not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None
    return True


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")  # fmt: skip


_warned_brokers: set[str] = set()


def _warn_broker_master(conf: Any, broker: str) -> None:
    """Say once per process that the broker stands in for the lock masters (the settings
    are read by beat, by workers and by each CLI check: one line is enough)."""
    if broker in _warned_brokers:
        return
    _warned_brokers.add(broker)
    setting = written_name(conf, "singleton_beat_redis_urls")
    logger.warning(
        "%s is not set: using the broker %s as the only lock master. One master gives no "
        "Redis fault tolerance; list three independent masters in %s.",
        setting, safe_url(broker), setting,
    )  # fmt: skip


def _positive(name: str, value: Any) -> None:
    validate.positive_seconds(f"singleton_beat_{name}", value)


def _refuse(name: str, value: Any, accepted: str) -> NoReturn:
    raise ConfigurationError(f"singleton_beat_{name}", value, accepted)


CONFLICT_POLICIES = ("skip", "retry", "raise")
LOCK_ERROR_POLICIES = ("fail_closed", "fail_open")


@dataclasses.dataclass(frozen=True)
class TaskConfig(RedisMembers):
    """What workers read: app-wide defaults for singleton tasks (``singleton_beat_task_*``),
    their masters, and whether every task drops a second copy of a beat slot.

    Locks use the scheduler's masters (``singleton_beat_redis_urls``) unless
    ``singleton_beat_task_redis_urls`` names others.
    """

    redis_urls: tuple[str, ...]
    key_prefix: str = defaults.KEY_PREFIX
    node_timeout: float = defaults.NODE_TIMEOUT
    fence_retention: float = defaults.SLOT_RETENTION
    """How long a slot's "ran" mark is kept (shared with the scheduler's done marks)."""
    task_fence_retention: float = defaults.LOCK_FENCE_RETENTION
    """How long a task lock's fencing counter is kept after its last grant: longer than
    the longest gap between two runs of one key, so that fences never restart at 1."""
    task_ttl: float = defaults.TASK_TTL
    task_on_conflict: str = "skip"
    task_retry_countdown: float = defaults.TASK_RETRY_COUNTDOWN
    task_on_lock_error: str = "fail_closed"
    task_release_on_retry: bool = True
    task_backend: str | None = None
    """Dotted path to another lock backend for every singleton task: a ``LockBackend``
    class made with no arguments, or a function ``(app) -> backend``. With it set, no
    Redis URL is needed for tasks."""
    drop_slot_copies: bool = True
    """A worker drops a second copy of a beat slot (same entry and slot headers) of every
    task before it runs, not only of singleton and slot-aware tasks."""
    redis_transport_options: Any = None
    """As :attr:`Config.redis_transport_options`, for the task masters too."""
    redis_use_ssl: Any = None
    redis_min_replicas: Any = defaults.MIN_REPLICAS

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any], *, urls_required: bool = True) -> TaskConfig:
        """The settings from ``conf``; with ``urls_required=False`` (a task that brings its
        own lock backend) a missing ``singleton_beat_redis_urls`` is no error."""
        refuse_unknown(conf)
        try:
            return cls._from_conf(conf, urls_required)
        except ConfigurationError as exc:
            raise as_written(conf, exc) from None

    @classmethod
    def _from_conf(cls, conf: Mapping[str, Any], urls_required: bool) -> TaskConfig:
        urls = conf.get("singleton_beat_task_redis_urls")
        follows = not urls and store_follows_source(conf)
        own_backend = conf.get("singleton_beat_task_backend") or follows or not urls_required
        if urls:
            redis_urls = _redis_urls({"singleton_beat_redis_urls": urls})
        elif own_backend and not conf.get("singleton_beat_redis_urls"):
            redis_urls = ()
        else:
            redis_urls = _redis_urls(conf)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "redis_urls":
                continue
            value = conf.get(f"singleton_beat_{f.name}")
            values[f.name] = f.default if value is None else value
        if follows and values["task_backend"] is None:
            values["task_backend"] = SQLALCHEMY_TASK_BACKEND
        config = cls(redis_urls=redis_urls, **_from_broker(conf, redis_urls, values))
        try:
            config.validate(urls_required=urls_required)
        except ConfigurationError as exc:
            if exc.name != "singleton_beat_task_redis_urls" or urls:
                raise
            raise ConfigurationError("singleton_beat_redis_urls", exc.value, exc.accepted) from None
        return config

    def backend_factory(self) -> Any:
        """What ``singleton_beat_task_backend`` names: a backend class or ``(app) -> backend``."""
        accepted = "a dotted path such as 'django_celery_singleton_beat.locks.DatabaseLock'"
        if not isinstance(self.task_backend, str) or "." not in self.task_backend:
            _refuse("task_backend", self.task_backend, accepted)
        try:
            found = _import(self.task_backend)
        except (ImportError, AttributeError) as exc:
            _refuse("task_backend", self.task_backend, f"{accepted} ({type(exc).__name__}: {exc})")
        if not callable(found):
            _refuse("task_backend", self.task_backend, f"{accepted} naming a class or function")
        return found

    def validate(self, *, urls_required: bool = True) -> None:
        for name in (
            "node_timeout", "fence_retention", "task_fence_retention", "task_ttl",
            "task_retry_countdown",
        ):  # fmt: skip
            _positive(name, getattr(self, name))
        check_choice("singleton_beat_task_on_conflict", self.task_on_conflict, CONFLICT_POLICIES)
        check_choice(
            "singleton_beat_task_on_lock_error", self.task_on_lock_error, LOCK_ERROR_POLICIES
        )
        for name in ("task_release_on_retry", "drop_slot_copies"):
            if not isinstance(getattr(self, name), bool):
                _refuse(name, getattr(self, name), "True or False")
        if self.task_backend is not None:
            self.backend_factory()
        validate.min_replicas("singleton_beat_redis_min_replicas", self.redis_min_replicas)
        if not self.redis_urls and (self.task_backend is not None or not urls_required):
            return
        try:
            members = self.members()
        except ConfigurationError as exc:
            raise _named(exc, "singleton_beat_task_redis_urls") from None
        Keys(self.key_prefix, hash_tags=any(m.cluster for m in members))


@functools.cache
def setting_names() -> frozenset[str]:
    """Every Celery setting the library reads (``singleton_beat_*``)."""
    fields = [f.name for cls in (Config, TaskConfig) for f in dataclasses.fields(cls)]
    return frozenset(f"singleton_beat_{name}" for name in [*fields, "task_redis_urls"])


def names_this_library(conf: Mapping[str, Any]) -> bool:
    """Whether an app's settings say it uses the library: ``beat_scheduler`` names its
    scheduler (``"singleton"``, a path into the package, the class or a subclass), or a
    ``singleton_beat_*`` setting is set. Imports nothing."""
    scheduler = conf.get("beat_scheduler")
    if isinstance(scheduler, str):
        module = scheduler.partition(":")[0].partition(".")[0]
        named = scheduler == "singleton" or module == _PACKAGE
    else:
        classes = getattr(scheduler, "__mro__", ())
        named = any(c.__module__.partition(".")[0] == _PACKAGE for c in classes)
    return named or any(conf.get(name) is not None for name in setting_names())


def written_name(conf: Any, name: str) -> str:
    """A setting's name as the user wrote it: ``CELERY_SINGLETON_BEAT_REDIS_URLS`` when the
    app reads a namespace (Django's ``config_from_object(..., namespace="CELERY")``), and
    so for Celery's own settings (``broker_url``, ``beat_schedule['report']``)."""
    prefix = getattr(conf, "prefix", None)
    key = _LEADING_KEY.match(name)
    if not prefix or key is None or not _is_setting(key[0]):
        return name
    return f"{prefix}{key[0].upper()}{name[key.end() :]}"


_LEADING_KEY = re.compile(r"[a-z][a-z0-9_]*")
_OUR_NAME = re.compile(r"\bsingleton_beat_[a-z_]+")


def _is_setting(key: str) -> bool:
    return key in setting_names() or key in CELERY_SETTINGS


def as_written(conf: Any, exc: ConfigurationError) -> ConfigurationError:
    """``exc`` with every setting it names as the user wrote it (see :func:`written_name`):
    in its name and in the accepted form. Every error about a setting that reaches the
    user goes through here, wherever it was raised."""
    if not getattr(conf, "prefix", None) or isinstance(exc, UnknownSetting):
        return exc

    def ours(match: re.Match[str]) -> str:
        return written_name(conf, match[0]) if match[0] in setting_names() else match[0]

    name = _OUR_NAME.sub(ours, written_name(conf, exc.name))
    accepted = _OUR_NAME.sub(ours, exc.accepted)
    if (name, accepted) == (exc.name, exc.accepted):
        return exc
    return ConfigurationError(name, exc.value, accepted)


def unknown_settings(conf: Any) -> Iterable[UnknownSetting]:
    """An error for each key of ``conf`` named like a setting of the library
    (``singleton_beat_*``, or ``CELERY_SINGLETON_BEAT_*`` in the app's namespace) that
    nothing reads, with the setting it probably means. Keys of other families (Celery's,
    the Django app's ``SINGLETON_BEAT_*``) are not looked at."""
    keys = sorted(k for k in conf if isinstance(k, str))
    prefix = getattr(conf, "prefix", None)  # known once the keys were read (Celery loads lazily)
    spaced = f"{prefix}SINGLETON_BEAT_" if prefix else None
    known = setting_names()
    for key in keys:
        if key.startswith("singleton_beat_"):
            name, names = key, known
        elif spaced is not None and key.startswith(spaced):
            name = f"singleton_beat_{key[len(spaced) :].lower()}"
            names = frozenset(written_name(conf, n) for n in known)
        else:
            continue
        if name not in known:
            misplaced = app_setting_meant(key)
            if misplaced is not None:
                yield UnknownSetting(key, safe_value(conf.get(key)), *misplaced)
            else:
                yield UnknownSetting(key, safe_value(conf.get(key)), closest(key, names))


#: The Django app's own settings, ``SINGLETON_BEAT_*`` in Django's settings (read by the
#: app, not through Celery), after their prefix; the app's tests keep it equal to its
#: ``AppSettings``.
APP_SETTINGS = frozenset(
    {"RECORD", "DATABASE", "RECORDER_BUFFER", "RESULT_MAX_CHARS", "ARGS_PREVIEW", "RETENTION",
     "TTL_WARNING", "CELERY_APP"}
)  # fmt: skip
APP_PREFIX, CELERY_APP_PREFIX = "SINGLETON_BEAT_", "CELERY_SINGLETON_BEAT_"


def app_setting_meant(name: str) -> tuple[str, str] | None:
    """The Django app's setting that ``CELERY_SINGLETON_BEAT_<X>`` stands for when it is
    one of the app's own names (``CELERY_SINGLETON_BEAT_RETENTION``: the app's
    ``SINGLETON_BEAT_RETENTION``, not the Celery setting it looks like), and why: the one
    guess beat, the CLI and the Django system check give."""
    rest = name.removeprefix(CELERY_APP_PREFIX)
    if rest == name or rest not in APP_SETTINGS or name.lower()[7:] in setting_names():
        return None
    return (
        f"{APP_PREFIX}{rest}",
        f"The Django app's own settings are {APP_PREFIX}* (no CELERY_ prefix); only the "
        f"Celery settings are {CELERY_APP_PREFIX}*.",
    )


def refuse_unknown(conf: Any) -> None:
    """Raise the first of :func:`unknown_settings`, if any."""
    for exc in unknown_settings(conf):
        raise exc


def closest(name: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` that ``name`` most probably misspells, if any is close.

    Names are compared on what follows their family's prefix (``singleton_beat_``,
    ``CELERY_SINGLETON_BEAT_``, ``SINGLETON_BEAT_``), case aside: the long prefix they
    share would make any two of them look alike (``singleton_beat_colour`` is not
    ``singleton_beat_store``). Of two with the same rest, the one of ``name``'s family.
    """
    family = _family(name)
    by_rest: dict[str, str] = {}
    for candidate in sorted(names, key=lambda n: (_family(n) != family, n)):
        by_rest.setdefault(_rest(candidate), candidate)
    found = difflib.get_close_matches(_rest(name), list(by_rest), n=1, cutoff=0.7)
    return by_rest[found[0]] if found else None


_FAMILY = re.compile(r"^(.*?singleton_beat_)", re.IGNORECASE)


def _family(name: str) -> str:
    found = _FAMILY.match(name)
    return found[1] if found else ""


def _rest(name: str) -> str:
    return name[len(_family(name)) :].lower()


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``choices``."""
    validate.choice(name, value, choices)


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


#: What ``singleton_beat_store`` accepts.
STORE_ACCEPTED = (
    "'redis', 'database', 'sqlalchemy', 'zookeeper', 'etcd', or the dotted path of a SlotStore "
    "subclass or of a function (app, config) -> SlotStore"
)

SQLALCHEMY_URL_ACCEPTED = (
    "a SQLAlchemy URL such as 'postgresql+psycopg://user:password@host/dbname', "
    "'mysql+pymysql://user:password@host/dbname' or 'sqlite:////path/to/file.db' "
    "(when unset: beat_dburi)"
)


def check_sqlalchemy_url(url: Any) -> None:
    """Refuse anything but a URL with a scheme (the SQLAlchemy store's database)."""
    if not isinstance(url, str) or "://" not in url or url.startswith("://"):
        _refuse("sqlalchemy_url", safe_value(url), SQLALCHEMY_URL_ACCEPTED)


def sqlalchemy_url(conf: Mapping[str, Any]) -> str:
    """The SQLAlchemy URL of ``singleton_beat_sqlalchemy_url``, else of ``beat_dburi``."""
    url = conf.get("singleton_beat_sqlalchemy_url") or conf.get("beat_dburi")
    try:
        check_sqlalchemy_url(url)
    except ConfigurationError as exc:
        raise as_written(conf, exc) from None
    return str(url)


def upgrade_command(app: Celery) -> str:
    """The command that creates or upgrades the SQLAlchemy store's tables, for this app."""
    return f"celery -A {getattr(app, 'main', None) or 'proj'} singleton-beat db upgrade"


def dotted(setting: str, path: Any, accepted: str, *, written: Any = None) -> Any:
    """The class or function the dotted ``path`` names (something callable): else
    ConfigurationError naming ``setting``, its value as ``written`` (default: ``path``)
    and the ``accepted`` form."""
    value = path if written is None else written
    if not isinstance(path, str) or "." not in path:
        raise ConfigurationError(setting, value, accepted)
    try:
        found = _import(path)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            setting, value, f"{accepted} ({type(exc).__name__}: {exc})"
        ) from None
    if not callable(found):
        raise ConfigurationError(setting, value, accepted)
    return found

"""The one place a slot store is made: what ``singleton_beat_store`` names, connected.

Called by :class:`~celery_singleton_beat.runtime.Runtime` only (an import-linter contract
keeps it so): every part of the library reaches the store through the app's runtime.
``"redis"`` (the default: a majority of the masters in ``singleton_beat_redis_urls``),
``"database"`` (the Django app's database store), ``"sqlalchemy"`` (a database through
SQLAlchemy, :mod:`celery_singleton_beat.stores.sqlalchemy`), ``"zookeeper"`` (a ZooKeeper
ensemble, :mod:`celery_singleton_beat.stores.zookeeper`) or the dotted path of a
:class:`~celery_singleton_beat.stores.base.SlotStore` subclass or of a function
``(app, config) -> SlotStore``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from celery_singleton_beat.core.schema import StoreKind
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.settings.config import STORE_ACCEPTED, Config, as_written, dotted
from celery_singleton_beat.stores.base import SlotStore

if TYPE_CHECKING:
    from celery import Celery

#: What ``"database"`` names (the Django app must be installed).
DATABASE_STORE = "django_celery_singleton_beat.stores.DatabaseSlotStore"

StoreFactory = Callable[["Celery", Config], SlotStore]


def store_factory(name: str) -> StoreFactory:
    """The class or function ``singleton_beat_store`` names; ConfigurationError if none."""
    if name == StoreKind.REDIS:
        from celery_singleton_beat.stores.redis import RedisSlotStore  # noqa: PLC0415

        return RedisSlotStore.from_config
    if name == StoreKind.SQLALCHEMY:
        from celery_singleton_beat.stores.sqlalchemy import SqlAlchemySlotStore  # noqa: PLC0415

        return SqlAlchemySlotStore.from_config
    if name == StoreKind.ZOOKEEPER:
        from celery_singleton_beat.stores.zookeeper import ZooKeeperSlotStore  # noqa: PLC0415

        return ZooKeeperSlotStore.from_config
    path = DATABASE_STORE if name == StoreKind.DATABASE else name
    found = dotted("singleton_beat_store", path, STORE_ACCEPTED, written=name)
    if isinstance(found, type) and issubclass(found, SlotStore):
        made: StoreFactory = getattr(found, "from_config", None) or (lambda app, config: found())
        return made
    factory: StoreFactory = found
    return factory


def make_store(app: Celery, config: Config) -> SlotStore:
    """The slot store the app's settings name, connected; a setting it refuses is named
    as the user wrote it."""
    try:
        store = store_factory(config.store)(app, config)
        if not isinstance(store, SlotStore):
            made = type(store).__name__
            raise ConfigurationError(
                "singleton_beat_store", config.store, f"{STORE_ACCEPTED}; it made a {made}"
            )
    except ConfigurationError as exc:
        raise as_written(app.conf, exc) from None
    return store

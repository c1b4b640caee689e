"""Slot stores: where beat replicas share the schedule's state (see :mod:`.base`).

``singleton_beat_store`` picks one: ``"redis"`` (the default: a majority of the masters in
``singleton_beat_redis_urls``), ``"database"`` (the Django app's database store) or the
dotted path of a :class:`~celery_singleton_beat.stores.base.SlotStore` subclass or of a
function ``(app, config) -> SlotStore``.
"""

from __future__ import annotations

import importlib
from typing import Any

from celery_singleton_beat.config import Config, as_written
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.schema import StoreKind
from celery_singleton_beat.stores.base import Claim, EntryState, SlotOutcome, SlotStore
from celery_singleton_beat.stores.memory import MemorySlotStore

__all__ = ["Claim", "EntryState", "MemorySlotStore", "SlotOutcome", "SlotStore", "make_store"]

#: What ``"database"`` names (the Django app must be installed).
DATABASE_STORE = "django_celery_singleton_beat.stores.DatabaseSlotStore"

ACCEPTED = (
    "'redis', 'database', or the dotted path of a SlotStore subclass or of a function "
    "(app, config) -> SlotStore"
)


def store_factory(name: str) -> Any:
    """The class or function ``singleton_beat_store`` names; ConfigurationError if none."""
    if name == StoreKind.REDIS:
        from celery_singleton_beat.stores.redis import RedisSlotStore  # noqa: PLC0415

        return RedisSlotStore.from_config
    path = DATABASE_STORE if name == StoreKind.DATABASE else name
    if not isinstance(path, str) or "." not in path:
        raise ConfigurationError("singleton_beat_store", name, ACCEPTED)
    module, _, attr = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            "singleton_beat_store", name, f"{ACCEPTED} ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(found, type) and issubclass(found, SlotStore):
        return getattr(found, "from_config", None) or (lambda app, config: found())
    if not callable(found):
        raise ConfigurationError("singleton_beat_store", name, ACCEPTED)
    return found


def make_store(app: Any, config: Config) -> SlotStore:
    """The slot store the app's settings name, connected; a setting it refuses is named
    as the user wrote it."""
    try:
        store = store_factory(config.store)(app, config)
        if not isinstance(store, SlotStore):
            made = type(store).__name__
            raise ConfigurationError(
                "singleton_beat_store", config.store, f"{ACCEPTED}; it made a {made}"
            )
    except ConfigurationError as exc:
        raise as_written(app.conf, exc) from None
    return store

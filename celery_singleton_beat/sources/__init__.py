"""Schedule sources: ``singleton_beat_schedule_source`` names one, or a list merged.

Built in: ``"beat_schedule"`` (the default, Celery's setting), ``"django_celery_beat"``
(django-celery-beat's tables, from the Django app) and ``"runtime"`` (entries kept on the
Redis masters by :mod:`celery_singleton_beat.schedule`). Any other value is the dotted path of
a :class:`~celery_singleton_beat.sources.base.ScheduleSource` subclass, made with the
Celery app as its only argument.
"""

from __future__ import annotations

import importlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.sources.base import EntrySpec, ScheduleSource

SETTING = "singleton_beat_schedule_source"
BUILT_IN = {
    "beat_schedule": "celery_singleton_beat.sources.beat_schedule.BeatScheduleSource",
    "django_celery_beat": "django_celery_singleton_beat.sources.DjangoCeleryBeatSource",
    "runtime": "celery_singleton_beat.sources.runtime.RuntimeSource",
}
ACCEPTED = (
    "'beat_schedule' (default), 'django_celery_beat', 'runtime', the dotted path of a "
    "ScheduleSource subclass, or a list of these"
)

__all__ = ["EntrySpec", "MergedSource", "ScheduleSource", "load_source"]


class MergedSource(ScheduleSource):
    """Several sources as one: their entries side by side, a name in two refused."""

    name = "merged"

    def __init__(self, app: Any, sources: Sequence[ScheduleSource]) -> None:
        super().__init__(app)
        self.sources = list(sources)
        self._owner: dict[str, ScheduleSource] = {}

    def version(self) -> Hashable:
        return tuple(source.version() for source in self.sources)

    def entries(self) -> Mapping[str, EntrySpec]:
        merged: dict[str, EntrySpec] = {}
        owner: dict[str, ScheduleSource] = {}
        for source in self.sources:
            for name, spec in source.entries().items():
                if name in owner:
                    raise ConfigurationError(
                        SETTING,
                        [s.name for s in self.sources],
                        f"sources whose entry names differ: {name!r} is an entry of both "
                        f"{owner[name].name!r} and {source.name!r}; rename one of them",
                    )
                merged[name], owner[name] = spec, source
        self._owner = owner
        return merged

    def published(self, name: str, slot: int, sent_at: float) -> None:
        source = self._owner.get(name)
        if source is not None:
            source.published(name, slot, sent_at)

    def close(self) -> None:
        for source in self.sources:
            source.close()


def load_source(app: Any, value: Any = None) -> ScheduleSource:
    """The source ``value`` (default: the app's ``singleton_beat_schedule_source``) names."""
    if value is None:
        value = app.conf.get(SETTING) or "beat_schedule"
    if isinstance(value, str):
        return _one(app, value, value)
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigurationError(SETTING, value, ACCEPTED)
    names = [_check_name(value, item) for item in value]
    if len(set(names)) != len(names):
        raise ConfigurationError(SETTING, value, f"{ACCEPTED}, each listed once")
    sources = [_one(app, name, value) for name in names]
    return sources[0] if len(sources) == 1 else MergedSource(app, sources)


def _check_name(value: Any, item: Any) -> str:
    if not isinstance(item, str) or not item:
        raise ConfigurationError(SETTING, value, ACCEPTED)
    return item


def _one(app: Any, name: str, value: Any) -> ScheduleSource:
    path = BUILT_IN.get(name, name)
    module, _, attribute = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute) if module else None
    except (ImportError, AttributeError) as exc:
        hint = " (install celery-singleton-beat[django-celery-beat])" if name in BUILT_IN else ""
        raise ConfigurationError(
            SETTING, value, f"{ACCEPTED}; {name!r} cannot be imported{hint}: {exc}"
        ) from None
    if not (isinstance(found, type) and issubclass(found, ScheduleSource)):
        raise ConfigurationError(SETTING, value, ACCEPTED)
    return found(app)

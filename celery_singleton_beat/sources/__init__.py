"""Schedule sources: ``singleton_beat_schedule_source`` names one, or a list merged.

Built in: ``"beat_schedule"`` (the default, Celery's setting), ``"django_celery_beat"``
(django-celery-beat's tables, from the Django app), ``"sqlalchemy_celery_beat"``
(sqlalchemy-celery-beat's tables, through SQLAlchemy) and ``"runtime"`` (entries kept on the
Redis masters by :mod:`celery_singleton_beat.schedule.api`). Any other value is the dotted path of
a :class:`~celery_singleton_beat.sources.base.ScheduleSource` subclass, made with the
Celery app as its only argument.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from celery_singleton_beat.core.entries import OPTION
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.sources.base import EntrySpec, ScheduleSource

SETTING = "singleton_beat_schedule_source"
BUILT_IN = {
    "beat_schedule": "celery_singleton_beat.sources.beat_schedule.BeatScheduleSource",
    "django_celery_beat": "django_celery_singleton_beat.sources.DjangoCeleryBeatSource",
    "runtime": "celery_singleton_beat.sources.document.RuntimeSource",
    "sqlalchemy_celery_beat": (
        "celery_singleton_beat.sources.sqlalchemy_celery_beat.SqlAlchemyCeleryBeatSource"
    ),
}
ACCEPTED = (
    "'beat_schedule' (default), 'django_celery_beat', 'sqlalchemy_celery_beat', 'runtime', "
    "the dotted path of a ScheduleSource subclass, or a list of these"
)

logger = logging.getLogger(__name__)

__all__ = ["EntrySpec", "MergedSource", "ScheduleSource", "load_source"]


class MergedSource(ScheduleSource):
    """Several sources as one: their entries side by side, a name in two refused.

    A source that cannot be read (its database or masters down) is logged once and keeps
    the entries it gave last, so that one source's outage never stops the others. With
    ``control``, the names it holds paused are marked paused, whatever their source.
    """

    name = "merged"

    def __init__(self, app: Any, sources: Sequence[ScheduleSource], control: Any = None) -> None:
        super().__init__(app)
        self.control = control
        self.sources = [*sources, *([control] if control is not None else [])]
        self._owner: dict[str, ScheduleSource] = {}
        self._last: dict[int, Mapping[str, EntrySpec]] = {}
        self._failing: set[int] = set()

    def version(self) -> Hashable:
        return tuple(self._read(s, s.version, ("unreadable", s.name)) for s in self.sources)

    def hinted(self) -> bool:
        hinted = [s.hinted() for s in self.sources]  # every source's notice taken now
        return any(hinted)

    def entries(self) -> Mapping[str, EntrySpec]:
        merged: dict[str, EntrySpec] = {}
        owner: dict[str, ScheduleSource] = {}
        for source in self.sources:
            found = self._read(source, source.entries, None)
            if found is None:
                found = self._last.get(id(source), {})
            self._last[id(source)] = found
            for name, spec in found.items():
                if name in owner:
                    raise ConfigurationError(
                        SETTING,
                        [s.name for s in self.sources if s is not self.control],
                        f"sources whose entry names differ: {name!r} is an entry of both "
                        f"{owner[name].name!r} and {source.name!r}; rename one of them",
                    )
                merged[name], owner[name] = spec, source
        self._owner = owner
        paused = self.control.paused if self.control is not None else ()
        return {name: _paused(spec) if name in paused else spec for name, spec in merged.items()}

    def _read(self, source: ScheduleSource, call: Any, failed: Any) -> Any:
        try:
            value = call()
        except ConfigurationError:
            raise
        except Exception as exc:
            if id(source) not in self._failing:
                logger.error(
                    "singleton beat: the schedule source %r cannot be read, keeping its "
                    "entries read last: %s: %s", source.name, type(exc).__name__, exc,
                )  # fmt: skip
            self._failing.add(id(source))
            return failed
        if id(source) in self._failing:
            logger.warning("singleton beat: the schedule source %r answers again", source.name)
            self._failing.discard(id(source))
        return value

    def source_of(self, name: str) -> str | None:
        """The name of the source entry ``name`` came from at the last read."""
        source = self._owner.get(name)
        return None if source is None else source.name

    def published(self, name: str, slot: int, sent_at: float) -> None:
        self.published_many([(name, slot)], sent_at)

    def published_many(self, runs: Sequence[tuple[str, int]], sent_at: float) -> None:
        owned: dict[int, list[tuple[str, int]]] = {}
        for name, slot in runs:
            source = self._owner.get(name)
            if source is not None:
                owned.setdefault(id(source), []).append((name, slot))
        for source in self.sources:
            if id(source) in owned:
                source.published_many(owned[id(source)], sent_at)

    def close(self) -> None:
        for source in self.sources:
            source.close()


def _paused(spec: EntrySpec) -> EntrySpec:
    options = dict(spec.get("options") or {})
    options[OPTION] = {**(options.get(OPTION) or {}), "paused": True}
    return {**spec, "options": options}


def load_source(app: Any, value: Any = None) -> ScheduleSource:
    """The sources ``value`` (default: the app's ``singleton_beat_schedule_source``) names,
    merged, with the run-now and pause controls of :mod:`celery_singleton_beat.schedule.api`."""
    if value is None:
        value = app.conf.get(SETTING) or "beat_schedule"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigurationError(SETTING, value, ACCEPTED)
    names = [_check_name(value, item) for item in value]
    if len(set(names)) != len(names):
        raise ConfigurationError(SETTING, value, f"{ACCEPTED}, each listed once")
    value = value[0] if len(value) == 1 else value
    sources = [_one(app, name, value) for name in names]
    from celery_singleton_beat.sources.document import ControlSource  # noqa: PLC0415

    return MergedSource(app, sources, control=ControlSource(app))


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

"""Schedule sources: ``singleton_beat_schedule_source`` names one, or a list merged.

Built in: ``"beat_schedule"`` (the default, Celery's setting), ``"django_celery_beat"``
(django-celery-beat's tables, from the Django app), ``"sqlalchemy_celery_beat"``
(sqlalchemy-celery-beat's tables, through SQLAlchemy) and ``"runtime"`` (entries kept on the
Redis masters by :mod:`celery_singleton_beat.schedule`). Any other value is the dotted path of
a :class:`~celery_singleton_beat.sources.base.ScheduleSource` subclass, made with the
Celery app as its only argument.

An entry name that two sources give is a :class:`Conflict`: the copy of the source listed
first is scheduled, the other left out, on every replica alike (they read the same list).
Neither copy is dropped for the other to stop: an entry that ran keeps running when
another source gains its name (an edit, a race with :func:`~celery_singleton_beat.schedule.add`,
which refuses a name another source gives).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery_singleton_beat.core.entries import OPTION
from celery_singleton_beat.core.schema import (
    PAUSED_BY_HAND,
    PAUSED_IN_SETTINGS,
    PAUSED_ON_FAILURE,
)
from celery_singleton_beat.errors import ConfigurationError, SourceUnavailable
from celery_singleton_beat.observe import events
from celery_singleton_beat.settings.config import as_written
from celery_singleton_beat.sources.base import EntrySpec, ScheduleSource
from celery_singleton_beat.sources.document import ControlSource

if TYPE_CHECKING:
    from celery import Celery

SETTING = "singleton_beat_schedule_source"
#: The names of the built-in sources, as in the setting.
BEAT_SCHEDULE, DJANGO_CELERY_BEAT, RUNTIME = "beat_schedule", "django_celery_beat", "runtime"
SQLALCHEMY_CELERY_BEAT = "sqlalchemy_celery_beat"
BUILT_IN = {
    BEAT_SCHEDULE: "celery_singleton_beat.sources.beat_schedule.BeatScheduleSource",
    DJANGO_CELERY_BEAT: "django_celery_singleton_beat.sources.DjangoCeleryBeatSource",
    SQLALCHEMY_CELERY_BEAT: (
        "celery_singleton_beat.sources.sqlalchemy_celery_beat.SqlAlchemyCeleryBeatSource"
    ),
    RUNTIME: "celery_singleton_beat.sources.document.RuntimeSource",
}
ACCEPTED = (
    "'beat_schedule' (default), 'django_celery_beat', 'sqlalchemy_celery_beat', 'runtime', "
    "the dotted path of a ScheduleSource subclass, or a list of these"
)

logger = logging.getLogger(__name__)

__all__ = [
    "Conflict", "EntrySpec", "MergedSource", "ScheduleSource", "given_by", "load_source",
    "read_once",
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Conflict:
    """Entry ``entry`` is given by two sources: the copy of ``kept`` (listed first in
    ``singleton_beat_schedule_source``) is scheduled, that of ``left_out`` is not."""

    entry: str
    kept: str
    left_out: str

    def __str__(self) -> str:
        return (
            f"entry {self.entry!r} is given by both {self.kept!r} and {self.left_out!r} "
            f"({SETTING}): beat leaves the copy of {self.left_out!r} out, {self.kept!r} is "
            f"listed first; rename or remove one of them"
        )


class MergedSource(ScheduleSource):
    """Several sources as one: their entries side by side.

    A name two sources give is taken from the one listed first; the other copy is left
    out, logged once while the conflict lasts, and listed in :attr:`conflicts`. A source
    that cannot be read (its database or masters down) is logged once and keeps the
    entries it gave last, so that one source's outage never stops the others. With
    ``control``, the names it holds paused are marked paused, whatever their source.
    """

    name = "merged"

    def __init__(
        self,
        app: Celery,
        sources: Sequence[ScheduleSource],
        control: Any = None,
        *,
        once: bool = False,
    ) -> None:
        super().__init__(app)
        self.control = control
        self.once = once
        """Read once, for a command: a source that cannot be read is not logged (the
        command says so, from :attr:`unread`)."""
        self.sources = [*sources, *([control] if control is not None else [])]
        self._owner: dict[str, ScheduleSource] = {}
        self._left: dict[str, ScheduleSource] = {}
        """The source of each entry the last read no longer gave: beat still decides the
        slots its old schedule had due when the change was seen, and their runs are told
        to that source."""
        self._last: dict[int, Mapping[str, EntrySpec]] = {}
        self._failing: dict[int, str] = {}
        self.conflicts: list[Conflict] = []
        """The names two sources gave at the last read, each with the copy left out."""
        self.held: dict[str, str] = {}
        """The names ``control`` held paused at the last read, each with who paused it."""

    def version(self) -> Hashable:
        return tuple(self._read(s, s.version, ("unreadable", s.name)) for s in self.sources)

    def hinted(self) -> bool:
        hinted = [s.hinted() for s in self.sources]  # every source's notice taken now
        return any(hinted)

    def entries(self) -> Mapping[str, EntrySpec]:
        read: list[tuple[ScheduleSource, Mapping[str, EntrySpec]]] = []
        for source in self.sources:
            found = self._read(source, source.entries, None)
            if found is None:
                found = self._last.get(id(source), {})
            self._last[id(source)] = found
            read.append((source, found))
        before = self._owner
        merged, self._owner, conflicts = _merge(read)
        self._left = {name: src for name, src in before.items() if name not in self._owner}
        self._report(conflicts)
        paused = self.control.paused if self.control is not None else {}
        self.held = {name: paused[name] for name in merged if name in paused}
        return {name: _paused(spec) if name in self.held else spec for name, spec in merged.items()}

    def pause_kind(self, name: str) -> str:
        """Who holds entry ``name``, scheduled paused, paused (one of
        :data:`~celery_singleton_beat.core.schema.PAUSE_KINDS`): its ``pause_on_failure``
        policy, a person, or else ``"paused"`` in its settings."""
        if name not in self.held:
            return PAUSED_IN_SETTINGS
        return PAUSED_ON_FAILURE if self.held[name] == PAUSED_ON_FAILURE else PAUSED_BY_HAND

    def _report(self, conflicts: list[Conflict]) -> None:
        """Log and count each conflict once when it appears, and once when it is gone."""
        before, self.conflicts = set(self.conflicts), conflicts
        for conflict in conflicts:
            if conflict not in before:
                logger.error("singleton beat: %s", conflict)
                events.emit(events.EntryConflict(conflict.entry, conflict.kept, conflict.left_out))
        for conflict in sorted(before - set(conflicts), key=str):
            logger.warning(
                "singleton beat: entry %r is no longer given by both %r and %r",
                conflict.entry, conflict.kept, conflict.left_out,
            )  # fmt: skip
            events.emit(
                events.EntryConflict(conflict.entry, conflict.kept, conflict.left_out, gone=True)
            )

    @property
    def unread(self) -> dict[str, str]:
        """The sources the last read could not read, each with why."""
        return {s.name: self._failing[id(s)] for s in self.sources if id(s) in self._failing}

    def _read(self, source: ScheduleSource, call: Any, failed: Any) -> Any:
        try:
            value = call()
        except ConfigurationError:
            raise
        except Exception as exc:
            if id(source) not in self._failing and not self.once:
                logger.error(
                    "singleton beat: the schedule source %r cannot be read, keeping its "
                    "entries read last: %s: %s", source.name, type(exc).__name__, exc,
                )  # fmt: skip
            self._failing[id(source)] = f"{type(exc).__name__}: {exc}"
            return failed
        if self._failing.pop(id(source), None) is not None:
            logger.warning("singleton beat: the schedule source %r answers again", source.name)
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
            source = self._owner.get(name) or self._left.get(name)
            if source is not None:
                owned.setdefault(id(source), []).append((name, slot))
        for source in self.sources:
            if id(source) in owned:
                source.published_many(owned[id(source)], sent_at)

    def close(self) -> None:
        """Close the sources; the conflicts counted while they were read are withdrawn
        (the count is of the entries this beat leaves out, and it leaves out no more)."""
        for conflict in self.conflicts:
            events.emit(
                events.EntryConflict(conflict.entry, conflict.kept, conflict.left_out, gone=True)
            )
        self.conflicts = []
        for source in self.sources:
            source.close()


def _merge(
    read: Sequence[tuple[ScheduleSource, Mapping[str, EntrySpec]]],
) -> tuple[dict[str, EntrySpec], dict[str, ScheduleSource], list[Conflict]]:
    """The entries of sources read in their listed order, each name from the first source
    that gives it; with the source of each, and the copies left out."""
    merged: dict[str, EntrySpec] = {}
    owner: dict[str, ScheduleSource] = {}
    conflicts: list[Conflict] = []
    for source, found in read:
        for name, spec in found.items():
            first = owner.get(name)
            if first is None:
                merged[name], owner[name] = spec, source
            else:
                conflicts.append(Conflict(name, first.name, source.name))
    return merged, owner, conflicts


def given_by(
    app: Celery, value: Any = None, *, besides: str | None = None
) -> tuple[dict[str, str], list[Conflict]]:
    """Every entry name the sources ``value`` names (default: the app's setting) give now,
    with the name of the source it is taken from, and the conflicts; ``besides`` leaves
    out the source of that name in the setting. Each source is read once, for a command or
    an API call (beat keeps its sources open instead); one that cannot be read raises
    :class:`SourceUnavailable`.
    """
    _specs, owners, conflicts = read_once(app, value, besides=besides)
    return owners, conflicts


def read_once(
    app: Celery, value: Any = None, *, besides: str | None = None
) -> tuple[dict[str, EntrySpec], dict[str, str], list[Conflict]]:
    """:func:`given_by` with the entries themselves: each name's spec as beat reads it,
    the name of its source, and the conflicts."""
    sources = _sources(app, value, besides)
    try:
        read = [(source, _entries_of(source)) for source in sources]
    finally:
        for source in sources:
            source.close()
    merged, owner, conflicts = _merge(read)
    return merged, {name: source.name for name, source in owner.items()}, conflicts


def read_each(
    app: Celery, value: Any = None
) -> tuple[dict[str, EntrySpec], dict[str, str], list[Conflict], dict[str, str]]:
    """:func:`read_once` reading on past a source that cannot be opened or read (for
    ``check``, which reports every problem at once): with, for each such source, why."""
    read: list[tuple[ScheduleSource, Mapping[str, EntrySpec]]] = []
    unread: dict[str, str] = {}
    for name in _source_names(app, value):
        try:
            source = _one(app, name, _shown(app, value))
        except ConfigurationError as exc:
            unread[name] = str(as_written(app.conf, exc))
            continue
        try:
            read.append((source, _entries_of(source)))
        except SourceUnavailable as exc:
            unread[name] = str(exc)
        finally:
            source.close()
    merged, owner, conflicts = _merge(read)
    return merged, {name: source.name for name, source in owner.items()}, conflicts, unread


def _entries_of(source: ScheduleSource) -> Mapping[str, EntrySpec]:
    try:
        return source.entries()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise SourceUnavailable(source.name, f"{type(exc).__name__}: {exc}") from exc


def _paused(spec: EntrySpec) -> EntrySpec:
    options = dict(spec.get("options") or {})
    options[OPTION] = {**(options.get(OPTION) or {}), "paused": True}
    return {**spec, "options": options}


def load_source(app: Celery, value: Any = None, *, once: bool = False) -> MergedSource:
    """The sources ``value`` (default: the app's ``singleton_beat_schedule_source``) names,
    merged, with the run-now and pause controls of :mod:`celery_singleton_beat.schedule`;
    ``once``: read once, for a command (see :attr:`MergedSource.once`)."""
    sources = _sources(app, value)
    return MergedSource(app, sources, control=ControlSource(app), once=once)


def _sources(app: Celery, value: Any, besides: str | None = None) -> list[ScheduleSource]:
    """The sources ``value`` names, in its order (``besides`` left out); a setting refused
    is named as the user wrote it."""
    try:
        return _named(app, value, besides)
    except ConfigurationError as exc:
        raise as_written(app.conf, exc) from None


def _named(app: Celery, value: Any, besides: str | None) -> list[ScheduleSource]:
    names = _names(app, value)
    return [_one(app, name, _shown(app, value)) for name in names if name != besides]


def _shown(app: Celery, value: Any) -> Any:
    """The setting's value as its errors show it."""
    if value is None:
        value = app.conf.get(SETTING) or "beat_schedule"
    return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value


def _source_names(app: Celery, value: Any) -> list[str]:
    try:
        return _names(app, value)
    except ConfigurationError as exc:
        raise as_written(app.conf, exc) from None


def _names(app: Celery, value: Any) -> list[str]:
    """The source names ``value`` (default: the app's setting) lists, checked."""
    if value is None:
        value = app.conf.get(SETTING) or "beat_schedule"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigurationError(SETTING, value, ACCEPTED)
    names = [_check_name(value, item) for item in value]
    if len(set(names)) != len(names):
        raise ConfigurationError(SETTING, value, f"{ACCEPTED}, each listed once")
    return names


def _check_name(value: Any, item: Any) -> str:
    if not isinstance(item, str) or not item:
        raise ConfigurationError(SETTING, value, ACCEPTED)
    return item


def _one(app: Celery, name: str, value: Any) -> ScheduleSource:
    path = BUILT_IN.get(name, name)
    module, _, attribute = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute) if module else None
    except (ImportError, AttributeError) as exc:
        extra = (
            name.replace("_", "-") if name in (DJANGO_CELERY_BEAT, SQLALCHEMY_CELERY_BEAT) else ""
        )
        hint = f" (install celery-singleton-beat[{extra}])" if extra else ""
        raise ConfigurationError(
            SETTING, value, f"{ACCEPTED}; {name!r} cannot be imported{hint}: {exc}"
        ) from None
    if not (isinstance(found, type) and issubclass(found, ScheduleSource)):
        raise ConfigurationError(SETTING, value, ACCEPTED)
    return found(app)

"""The schedule each periodic entry had over time, and the slots it owed in a window.

A beat replica tells which slots an entry owes from when on
(:class:`~celery_singleton_beat.observe.events.EntryScheduled`: at start, on every change of the
entry's schedule, when it leaves the schedule); the recorder keeps each version once as a
:class:`~.models.ScheduleVersion`, its slots as JSON:

- ``{"every_ms": 5000, "anchor_ms": 0}``: an interval, ``anchor + k * every``;
- ``{"cron": [minutes, hours, days of week, days of month, months], "tz": "Europe/Berlin"}``;
- ``{"solar": "sunrise", "lat": 52.5, "lon": 13.4}``;
- ``{"once": 1767225600000}``: a single slot (run now, one-off, clocked), or ``null``;
- ``{"bounded": {...}, "start_ms": ..., "end_ms": ...}``: another schedule within bounds;
- ``{"unknown": "<fingerprint>"}``: slots of a kind not known here, which cannot be counted;
- empty text: the entry left the schedule.

The dashboard's *expected* count is the sum, over the versions in force during the
window, of each version's slots after its ``since`` and up to the next version's::

    version 1 (every 5 s)  since 10:00:00.3 ─ 5 10 15 20 25 30 ┐
    version 2 (every 12 s) since 10:00:31.2 ───────────────────┴ 36 48 60 72 …
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab, solar

from celery_singleton_beat.core.slots import (
    BoundedSlots,
    CronSlots,
    IntervalSlots,
    OnceSlots,
    Slots,
    SolarSlots,
)

from .models import ScheduleVersion


def encode(slots: Slots | None) -> str:
    """The JSON text a version keeps of ``slots`` (empty for ``None``: no slots)."""
    return "" if slots is None else json.dumps(_spec(slots), sort_keys=True)


def _spec(slots: Slots) -> dict[str, Any]:
    if isinstance(slots, IntervalSlots):
        return {"every_ms": slots.every_ms, "anchor_ms": slots.anchor_ms}
    if isinstance(slots, CronSlots) and _zone_key(slots.tz) is not None:
        cron = slots.cron
        fields = (cron.minute, cron.hour, cron.day_of_week, cron.day_of_month, cron.month_of_year)
        return {"cron": [sorted(f) for f in fields], "tz": _zone_key(slots.tz)}
    if isinstance(slots, SolarSlots):
        return {"solar": slots.sun.event, "lat": slots.sun.lat, "lon": slots.sun.lon}
    if isinstance(slots, OnceSlots):
        return {"once": slots.at_ms}
    if isinstance(slots, BoundedSlots):
        return {"bounded": _spec(slots.slots), "start_ms": slots.start_ms, "end_ms": slots.end_ms}
    return {"unknown": slots.fingerprint()}


def _zone_key(tz: dt.tzinfo) -> str | None:
    if isinstance(tz, ZoneInfo):
        return tz.key
    return "UTC" if tz is dt.timezone.utc else None


def decode(text: str) -> Slots | None:
    """The slots a version kept (``None``: the entry had none); ValueError when they cannot
    be computed here."""
    return None if not text else _slots(json.loads(text))


def _slots(spec: dict[str, Any]) -> Slots:
    if "every_ms" in spec:
        return IntervalSlots(int(spec["every_ms"]), int(spec["anchor_ms"]))
    if "cron" in spec:
        minute, hour, day_of_week, day_of_month, month = spec["cron"]
        cron = crontab(minute, hour, day_of_week, day_of_month, month)
        return CronSlots(cron, ZoneInfo(spec["tz"]))
    if "solar" in spec:
        return SolarSlots(solar(spec["solar"], spec["lat"], spec["lon"]))
    if "once" in spec:
        return OnceSlots(spec["once"])
    if "bounded" in spec:
        return BoundedSlots(_slots(spec["bounded"]), spec["start_ms"], spec["end_ms"])
    raise ValueError(f"slots of a kind that cannot be counted here: {spec}")


def versions(
    entries: Iterable[str], until: dt.datetime, using: str
) -> dict[str, list[ScheduleVersion]]:
    """Each entry's versions up to ``until``, oldest first (entries with none left out)."""
    found: dict[str, list[ScheduleVersion]] = defaultdict(list)
    rows = ScheduleVersion.objects.using(using).filter(entry__in=list(entries), since__lte=until)
    for row in rows.order_by("entry", "since", "id"):
        found[row.entry].append(row)
    return dict(found)


def owed(
    history: Sequence[ScheduleVersion], start: dt.datetime, end: dt.datetime,
    limit: int = 100_000,
) -> int | None:  # fmt: skip
    """How many slots the versions in ``history`` owe in ``(start, end]``: each version's
    slots after its ``since``, up to the next version's (a single slot whenever it falls:
    beat sends it however late it sees it). None when a version's slots cannot be counted
    here, or they are more than ``limit``."""
    total = 0
    for version, following in zip(history, [*history[1:], None], strict=True):
        upper = end if following is None else min(end, following.since)
        try:
            slots = decode(version.slots)
        except (ValueError, KeyError, TypeError):
            return None
        lower = start if isinstance(slots, OnceSlots) else max(start, version.since)
        found = count(slots, _ms(lower), _ms(upper), limit - total)
        if found is None:
            return None
        total += found
    return total


def count(slots: Slots | None, after: int, until: int, limit: int) -> int | None:
    """How many of ``slots`` lie in ``(after, until]`` (ms); None past ``limit``."""
    if slots is None or until <= after:
        return 0
    if isinstance(slots, IntervalSlots):
        found = slots.count_between(after, until)
        return found if found <= limit else None
    found, slot = 0, slots.next_after(after)
    while slot is not None and slot <= until:
        found += 1
        if found > limit:
            return None
        slot = slots.next_after(slot)
    return found


def _ms(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)

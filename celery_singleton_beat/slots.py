"""Slot times: when each scheduled occurrence of an entry falls, the same on every replica.

A *slot* is one scheduled occurrence of an entry, identified by its time as a UTC
timestamp in whole milliseconds. Every replica computes the same slots from the same
schedule, with no clock reading involved:

- interval (:class:`celery.schedules.schedule`): ``anchor + k * every``; the anchor is
  stored once in Redis and shared by all replicas;
- crontab: every wall-clock time the expression matches in the schedule's timezone,
  with cron's rule for the hours clocks repeat or skip. A wall-clock time that happens
  twice (the hour repeated when clocks go back) is one slot, at its first occurrence,
  when the entry names its hours; when its hour is a wildcard (every hour), both
  occurrences are slots, so ``*/5`` keeps firing every five real minutes through the
  repeated hour. A wall-clock time that does not happen (the hour skipped when clocks go
  forward) is one slot, at the instant the same wall-clock time reads with the offset in
  force before the change (02:30 on a spring-forward night in Berlin fires at 03:30);
- solar: the next occurrence of the event, rounded to the second.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

from celery.schedules import crontab, schedule, solar

from celery_singleton_beat.errors import ConfigurationError

UTC = dt.timezone.utc
#: How far a crontab search looks ahead before it gives up (an impossible date, 30 Feb).
CRON_HORIZON_DAYS = 366 * 5
#: Farther than any UTC offset change (tz database: at most 2 hours, 30 minutes is common).
_FOLD_REACH = dt.timedelta(hours=3)


class Slots(Protocol):
    """The slot times of one entry."""

    def next_after(self, t: int) -> int | None:
        """The first slot strictly after ``t`` (ms), or ``None`` when there is none."""

    def fingerprint(self) -> str:
        """Changes whenever the schedule's slots change."""


class IntervalSlots:
    """``anchor + k * every`` for whole k."""

    def __init__(self, every_ms: int, anchor_ms: int = 0) -> None:
        self.every_ms = every_ms
        self.anchor_ms = anchor_ms

    def next_after(self, t: int) -> int:
        k = (t - self.anchor_ms) // self.every_ms + 1
        return self.anchor_ms + k * self.every_ms

    def fingerprint(self) -> str:
        return f"every:{self.every_ms}"

    def count_between(self, after: int, until: int) -> int:
        """How many slots lie in ``(after, until]``."""
        if until <= after:
            return 0
        last = (until - self.anchor_ms) // self.every_ms
        first = (after - self.anchor_ms) // self.every_ms
        return max(0, last - first)


class CronSlots:
    """Wall-clock matches of a Celery ``crontab`` in its timezone."""

    def __init__(self, cron: crontab, tz: dt.tzinfo) -> None:
        self.cron = cron
        self.tz = tz
        self._minutes = sorted(cron.minute)
        self._hours = sorted(cron.hour)
        self._every_hour = len(self._hours) == 24

    def next_after(self, t: int) -> int | None:
        local = dt.datetime.fromtimestamp(t / 1000, self.tz).replace(tzinfo=None)
        start = local.replace(second=0, microsecond=0)
        found = next((s for w in self._walls_from(start) if (s := self._first(w)) > t), None)
        if found is None or (self._steady(t) and self._steady(found)):
            return found
        return self._across_transition(t, start)

    def _across_transition(self, t: int, start: dt.datetime) -> int | None:
        """The first slot after ``t`` near a change of UTC offset, where wall-clock order
        and time order differ (01:00 PST follows 01:55 PDT): the search starts a few hours
        back and keeps the earliest slot, trying both occurrences of a repeated time."""
        best: int | None = None
        best_wall = start
        for wall in self._walls_from(start - _FOLD_REACH):
            if best is not None and wall > best_wall + _FOLD_REACH:
                break
            for slot in self._instants(wall):
                if slot > t and (best is None or slot < best):
                    best, best_wall = slot, wall
        return best

    def _steady(self, t: int) -> bool:
        """No change of UTC offset within ``_FOLD_REACH`` of ``t``."""
        reach = _FOLD_REACH.total_seconds()
        before = dt.datetime.fromtimestamp(t / 1000 - reach, self.tz).utcoffset()
        return before == dt.datetime.fromtimestamp(t / 1000 + reach, self.tz).utcoffset()

    def _first(self, wall: dt.datetime) -> int:
        return _to_ms(wall.replace(tzinfo=self.tz, fold=0))

    def _walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        """Matching wall-clock times from ``start`` on, in order, within the horizon."""
        day = start.date()
        for _ in range(CRON_HORIZON_DAYS):
            if self._day_matches(day):
                for hour in self._hours:
                    if day == start.date() and hour < start.hour:
                        continue
                    for minute in self._minutes:
                        wall = dt.datetime(day.year, day.month, day.day, hour, minute)
                        if wall >= start:
                            yield wall
            day += dt.timedelta(days=1)

    def _instants(self, wall: dt.datetime) -> list[int]:
        """The slot(s) of one wall-clock time: its first occurrence, and also its second
        when the hour is a wildcard and the time is repeated."""
        first = self._first(wall)
        if not self._every_hour:
            return [first]
        second_at = wall.replace(tzinfo=self.tz, fold=1)
        second = _to_ms(second_at)
        back = second_at.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None)
        return [first, second] if second != first and back == wall else [first]

    def _day_matches(self, day: dt.date) -> bool:
        cron = self.cron
        return (
            day.month in cron.month_of_year
            and day.day in cron.day_of_month
            and day.isoweekday() % 7 in cron.day_of_week
        )

    def fingerprint(self) -> str:
        cron = self.cron
        fields = (cron.minute, cron.hour, cron.day_of_week, cron.day_of_month)
        parts = [sorted(f) for f in (*fields, cron.month_of_year)]
        return f"cron:{parts}:{self.tz}"


class SolarSlots:
    """Occurrences of a Celery ``solar`` event, to the second."""

    def __init__(self, sun: solar) -> None:
        self.sun = sun

    def next_after(self, t: int) -> int:
        sun = self.sun
        start = dt.datetime.fromtimestamp(t / 1000, UTC).replace(tzinfo=None)
        event = sun._next_event(sun.ephem.Date(start))
        when = event.datetime().replace(tzinfo=UTC)
        slot = math.ceil(when.timestamp()) * 1000
        return slot if slot > t else self.next_after(t + 1000)

    def fingerprint(self) -> str:
        return f"solar:{self.sun.event}:{self.sun.lat}:{self.sun.lon}"


def slots_for(entry_name: str, run_every: Any, tz: dt.tzinfo) -> Slots:
    """The slot computation for an entry's schedule; refuses types it cannot compute."""
    if isinstance(run_every, crontab):
        return CronSlots(run_every, tz)
    if isinstance(run_every, solar):
        return SolarSlots(run_every)
    if type(run_every) is schedule:
        every_ms = round(run_every.run_every.total_seconds() * 1000)
        if every_ms <= 0:
            raise ConfigurationError(
                f"beat_schedule[{entry_name!r}]['schedule']",
                run_every.run_every,
                "an interval longer than zero",
            )
        return IntervalSlots(every_ms)
    raise ConfigurationError(
        f"beat_schedule[{entry_name!r}]['schedule']",
        run_every,
        "a number of seconds, a timedelta, celery.schedules.schedule, crontab or solar "
        "(custom schedule classes have no slot times every replica can agree on)",
    )


def _to_ms(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)


def to_datetime(slot: int) -> dt.datetime:
    """A slot as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(slot / 1000, UTC)


def slot_label(slot: int) -> str:
    """ISO 8601 UTC text of a slot, e.g. ``2026-11-24T23:00:00.000Z``."""
    return to_datetime(slot).strftime("%Y-%m-%dT%H:%M:%S.") + f"{slot % 1000:03d}Z"


def slot_task_id(entry_name: str, slot: int) -> str:
    """The task id every replica gives the message for this slot (a UUID5)."""
    return str(uuid.uuid5(_TASK_ID_NAMESPACE, f"{entry_name}\x00{slot}"))


_TASK_ID_NAMESPACE = uuid.UUID(bytes=hashlib.sha1(b"celery-singleton-beat").digest()[:16])

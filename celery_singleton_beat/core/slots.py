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
import functools
import hashlib
import importlib
import math
import uuid
from collections.abc import Iterator
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import BaseSchedule, crontab, schedule, solar

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
    """``anchor + k * every`` for whole k. Never changed once made: the entries of one
    interval and anchor share one (:func:`interval_slots`)."""

    __slots__ = ("anchor_ms", "every_ms")

    every_ms: int
    anchor_ms: int

    def __init__(self, every_ms: int, anchor_ms: int = 0) -> None:
        object.__setattr__(self, "every_ms", every_ms)
        object.__setattr__(self, "anchor_ms", anchor_ms)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"interval slots are shared and never change ({name})")

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
    """Occurrences of a Celery ``solar`` event, to the second.

    Computed with ephem from the schedule's public fields (``event``, ``lat``, ``lon``)
    and the event definitions Celery documents, never through the schedule's own search:
    that one is private and differs between Celery releases, while every replica, whatever
    its Celery, must find the same slots. An event that does not happen on a day (sunrise
    in the polar night) is searched for on the following days, up to
    :data:`SOLAR_HORIZON_DAYS`; past that the entry has no slot.
    """

    def __init__(self, sun: solar) -> None:
        if sun.event not in SOLAR_EVENTS:
            raise ConfigurationError("solar event", sun.event, f"one of {sorted(SOLAR_EVENTS)}")
        self.sun = sun
        self._method, horizon, self._use_center = SOLAR_EVENTS[sun.event]
        self._observer = _observer(sun.lat, sun.lon, horizon)

    def next_after(self, t: int) -> int | None:
        start = t / 1000
        while True:
            when = self._next_event(start)
            if when is None:
                return None
            slot = math.ceil(when) * 1000
            if slot > t:
                return slot
            start = when + 1.0

    def _next_event(self, start: float) -> float | None:
        """The UTC timestamp of the first event strictly after ``start`` (a timestamp)."""
        ephem = _ephem()
        sun = ephem.Sun()
        kwargs = {"use_center": True} if self._use_center else {}
        when = ephem.Date(dt.datetime.fromtimestamp(start, UTC).replace(tzinfo=None))
        for _ in range(SOLAR_HORIZON_DAYS):
            try:
                found = getattr(self._observer, self._method)(sun, start=when, **kwargs)
            except ephem.CircumpolarError:
                when = self._observer.next_antitransit(sun, start=when)
                continue
            moment = found.datetime().replace(tzinfo=UTC)
            return float(moment.timestamp())
        return None

    def fingerprint(self) -> str:
        return f"solar:{self.sun.event}:{self.sun.lat}:{self.sun.lon}"


#: event -> (ephem Observer method, horizon, use the sun's centre), as Celery defines them
SOLAR_EVENTS: dict[str, tuple[str, str, bool]] = {
    "dawn_astronomical": ("next_rising", "-18", True),
    "dawn_nautical": ("next_rising", "-12", True),
    "dawn_civil": ("next_rising", "-6", True),
    "sunrise": ("next_rising", "-0:34", False),
    "solar_noon": ("next_transit", "0", False),
    "sunset": ("next_setting", "-0:34", False),
    "dusk_civil": ("next_setting", "-6", True),
    "dusk_nautical": ("next_setting", "-12", True),
    "dusk_astronomical": ("next_setting", "-18", True),
}
#: How many days a solar search looks ahead for an event that does not happen every day.
SOLAR_HORIZON_DAYS = 366


def _ephem() -> Any:
    # celery.schedules.solar needs ephem too; only solar entries do, so it is optional
    return importlib.import_module("ephem")


def _observer(lat: float, lon: float, horizon: str) -> Any:
    observer = _ephem().Observer()
    observer.lat = str(lat)
    observer.lon = str(lon)
    observer.elev = 0
    observer.pressure = 0
    observer.horizon = horizon
    return observer


class OnceSlots:
    """One slot at a fixed time (a clocked schedule, a one-off entry's single run)."""

    def __init__(self, at_ms: int | None) -> None:
        self.at_ms = at_ms

    def next_after(self, t: int) -> int | None:
        return self.at_ms if self.at_ms is not None and self.at_ms > t else None

    def fingerprint(self) -> str:
        return f"once:{self.at_ms}"

    def __repr__(self) -> str:
        return f"<once {'never' if self.at_ms is None else slot_label(self.at_ms)}>"


class BoundedSlots:
    """Another schedule's slots from ``start_ms`` (inclusive) to ``end_ms`` (exclusive)."""

    def __init__(self, slots: Slots, start_ms: int | None, end_ms: int | None) -> None:
        self.slots = slots
        self.start_ms = start_ms
        self.end_ms = end_ms

    def next_after(self, t: int) -> int | None:
        if self.start_ms is not None:
            t = max(t, self.start_ms - 1)
        found = self.slots.next_after(t)
        if found is None or (self.end_ms is not None and found >= self.end_ms):
            return None
        return found

    def fingerprint(self) -> str:
        return f"{self.slots.fingerprint()}[{self.start_ms},{self.end_ms})"

    def __repr__(self) -> str:
        return f"<{self.fingerprint()}>"


class SlotSchedule(BaseSchedule):  # type: ignore[misc]
    """Slot times as a Celery schedule, for an entry's ``schedule``: what schedule sources
    hand over when no Celery schedule says it (a clocked time, bounds, a single run)."""

    def __init__(self, slots: Slots, app: Celery | None = None) -> None:
        super().__init__(app=app)
        self.slots = slots

    def is_due(self, last_run_at: dt.datetime) -> tuple[bool, float]:
        now = _to_ms(self.now())
        following = self.slots.next_after(_to_ms(last_run_at))
        if following is not None and following <= now:
            following, due = self.slots.next_after(now), True
        else:
            due = False
        wait = 3600.0 if following is None else max(0.0, (following - now) / 1000)
        return due, min(wait, 3600.0)

    def remaining_estimate(self, last_run_at: dt.datetime) -> dt.timedelta:
        return dt.timedelta(seconds=self.is_due(last_run_at)[1])

    def __repr__(self) -> str:
        return f"<slots {self.slots!r}>"


def schedule_tz(run_every: Any, default: dt.tzinfo) -> dt.tzinfo:
    """The timezone a schedule carries itself, else ``default``: django-celery-beat's
    ``TzAwareCrontab`` sets ``tz`` on the instance; a Celery schedule made with
    ``nowfun`` reads the time in the zone of what ``nowfun`` returns, as Celery's own
    scheduler does (``crontab(hour=9, nowfun=lambda: datetime.now(ZoneInfo("Asia/Tokyo")))``).
    """
    attributes = vars(run_every) if hasattr(run_every, "__dict__") else {}
    own = attributes.get("tz")
    if (
        not isinstance(own, dt.tzinfo)
        and isinstance(run_every, crontab)
        and callable(attributes.get("nowfun"))
    ):
        own = _nowfun_tz(run_every)
    if not isinstance(own, dt.tzinfo):
        return default
    zone = getattr(own, "zone", None)  # a pytz zone: its wall-clock arithmetic is its own
    return ZoneInfo(zone) if isinstance(zone, str) else own


def _nowfun_tz(run_every: Any) -> dt.tzinfo:
    """The zone of the aware datetime a schedule's ``nowfun`` returns."""
    now = run_every.nowfun()
    zone = now.tzinfo if isinstance(now, dt.datetime) else None
    if zone is None or now.utcoffset() is None:
        raise ConfigurationError(
            "nowfun", now, "a function returning an aware datetime (its zone is the "
            "schedule's), or the entry's timezone option",
        )  # fmt: skip
    return zone


def jitter_offset(entry_name: str, slot: int, jitter_ms: int) -> int:
    """How long after its time a slot is sent (ms), in ``[0, jitter_ms)``: a hash of the
    entry's name and the slot, so every replica computes the same offset."""
    if jitter_ms <= 0:
        return 0
    digest = hashlib.sha256(f"{entry_name}\x00{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % jitter_ms


#: The interval slots shared by entries (see :func:`interval_slots`), and at most how many.
_INTERVALS: dict[tuple[int, int], IntervalSlots] = {}
SHARED_INTERVALS = 4096


def interval_slots(every_ms: int, anchor_ms: int = 0) -> IntervalSlots:
    """The slots of an interval counted from an anchor, one object for every entry that
    has both: a million hourly entries registered together hold one. Past
    :data:`SHARED_INTERVALS` pairs, each new pair gets an object of its own."""
    key = (every_ms, anchor_ms)
    found = _INTERVALS.get(key)
    if found is None:
        found = IntervalSlots(every_ms, anchor_ms)
        if len(_INTERVALS) < SHARED_INTERVALS:
            _INTERVALS[key] = found
    return found


def slots_for(entry_name: str, run_every: Any, tz: dt.tzinfo) -> Slots:
    """The slot computation for an entry's schedule; refuses types it cannot compute.

    A :class:`SlotSchedule` (as schedule sources build them) brings its own slots.
    """
    if isinstance(run_every, SlotSchedule):
        return run_every.slots
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
        return interval_slots(every_ms)
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


@functools.lru_cache(maxsize=1024)  # the slots of a burst share a few times
def slot_label(slot: int) -> str:
    """ISO 8601 UTC text of a slot, e.g. ``2026-11-24T23:00:00.000Z``."""
    return to_datetime(slot).strftime("%Y-%m-%dT%H:%M:%S.") + f"{slot % 1000:03d}Z"


def slot_task_id(entry_name: str, slot: int) -> str:
    """The task id every replica gives the message for this slot (a UUID5)."""
    return str(uuid.uuid5(_TASK_ID_NAMESPACE, f"{entry_name}\x00{slot}"))


_TASK_ID_NAMESPACE = uuid.UUID(bytes=hashlib.sha1(b"celery-singleton-beat").digest()[:16])

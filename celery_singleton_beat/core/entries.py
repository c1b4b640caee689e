"""Per-entry settings and the plan the scheduler keeps for each entry.

Per-entry settings live in the entry's ``options`` under ``"singleton_beat"``, so the same
``beat_schedule`` still runs under Celery's default scheduler::

    "nightly-report": {
        "task": "reports.nightly",
        "schedule": crontab(hour=2, minute=30),
        "options": {"singleton_beat": {"misfire": "skip", "timezone": "Europe/Berlin"}},
    }

They are removed from the options before the message is published.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.beat import ScheduleEntry

from celery_singleton_beat.core.schema import Misfire, Overlap
from celery_singleton_beat.core.slots import (
    BoundedSlots,
    IntervalSlots,
    Slots,
    interval_slots,
    jitter_offset,
    schedule_tz,
    slots_for,
)
from celery_singleton_beat.errors import ConfigurationError

if TYPE_CHECKING:
    from celery import Celery

OPTION = "singleton_beat"
MISFIRE_POLICIES = tuple(m.value for m in Misfire)
OVERLAP_POLICIES = tuple(o.value for o in Overlap)


@dataclasses.dataclass(frozen=True)
class EntryPolicy:
    """What an entry asks for: how to treat missed slots, and in which timezone."""

    misfire: str = Misfire.COALESCE.value
    misfire_grace: float = 300.0
    timezone: str | None = None
    paused: bool = False
    """Publish nothing; the slots that pass follow the misfire policy on resume."""
    overlap: str = "allow"
    """Send a slot while the previous run waits or runs: allow, skip, buffer_one."""
    overlap_ttl: float = 3600.0
    """A run state older than this (s) holds back nothing (a lost message, a dead worker)."""
    start_time: dt.datetime | str | None = None
    """No slot before it (inclusive): an aware datetime or ISO 8601 text with an offset."""
    end_time: dt.datetime | str | None = None
    """No slot at or after it (exclusive), in the same forms."""
    jitter: float = 0
    """Send each slot up to this many seconds after its time, by an offset every replica
    derives from the entry's name and the slot (:func:`~.slots.jitter_offset`)."""
    slot_kwarg: str | None = None
    """The keyword argument the task receives its slot's scheduled time in (ISO 8601 UTC
    text, as the ``singleton_beat_slot`` header carries it)."""
    pause_on_failure: int = 0
    """Pause the entry after this many consecutive failed runs (0: never)."""

    @classmethod
    def from_options(
        cls, name: str, options: dict[str, Any], grace: float, where: str | None = None
    ) -> EntryPolicy:
        """The policy ``options[OPTION]`` asks for; a bad value is refused naming ``where``
        the settings were written (by default ``beat_schedule[name]['options'][OPTION]``;
        a database row's source names the row and its column)."""
        raw = options.get(OPTION) or {}
        where = where or f"beat_schedule[{name!r}]['options'][{OPTION!r}]"
        if not raw and cls is EntryPolicy:  # most entries: one (frozen) policy shared
            shared = _SHARED_POLICIES.get(grace)
            if shared is None:
                shared = _SHARED_POLICIES[grace] = cls(misfire_grace=grace)
                shared._validate(where)
            return shared
        if not isinstance(raw, dict):
            raise ConfigurationError(where, raw, "a dict of per-entry settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigurationError(
                f"{where}[{unknown[0]!r}]", raw[unknown[0]], f"one of {sorted(known)}"
            )
        policy = cls(**{"misfire_grace": grace, **raw})
        policy._validate(where)
        return policy

    def _validate(self, where: str) -> None:
        if self.misfire not in MISFIRE_POLICIES:
            raise ConfigurationError(
                f"{where}['misfire']", self.misfire, "'coalesce' (default) or 'skip'"
            )
        grace = self.misfire_grace
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace <= 0:
            raise ConfigurationError(
                f"{where}['misfire_grace']", grace, "a positive number of seconds"
            )
        if self.overlap not in OVERLAP_POLICIES:
            raise ConfigurationError(
                f"{where}['overlap']", self.overlap, "'allow' (default), 'skip' or 'buffer_one'"
            )
        ttl = self.overlap_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ConfigurationError(f"{where}['overlap_ttl']", ttl, "a positive number of seconds")
        if not isinstance(self.paused, bool):
            raise ConfigurationError(f"{where}['paused']", self.paused, "True or False")
        self._validate_policies(where)
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError, TypeError):
                raise ConfigurationError(
                    f"{where}['timezone']",
                    self.timezone,
                    "an IANA zone name such as 'Europe/Berlin'",
                ) from None

    def _validate_policies(self, where: str) -> None:
        jitter = self.jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter < 0:
            raise ConfigurationError(
                f"{where}['jitter']", jitter, "a number of seconds, 0 (default) or more"
            )
        failures = self.pause_on_failure
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
            raise ConfigurationError(
                f"{where}['pause_on_failure']", failures,
                "a whole number of consecutive failed runs, 0 (default: never pause) or more",
            )  # fmt: skip
        kwarg = self.slot_kwarg
        if kwarg is not None and not (isinstance(kwarg, str) and kwarg.isidentifier()):
            raise ConfigurationError(
                f"{where}['slot_kwarg']", kwarg, "a keyword argument name such as 'scheduled_at'"
            )
        start = _moment_ms(self.start_time, f"{where}['start_time']")
        end = _moment_ms(self.end_time, f"{where}['end_time']")
        if start is not None and end is not None and start >= end:
            raise ConfigurationError(
                f"{where}['end_time']", self.end_time, f"a time after start_time {self.start_time}"
            )

    @property
    def start_ms(self) -> int | None:
        """``start_time`` in epoch ms."""
        return _moment_ms(self.start_time, "start_time")

    @property
    def end_ms(self) -> int | None:
        """``end_time`` in epoch ms."""
        return _moment_ms(self.end_time, "end_time")

    @property
    def jitter_ms(self) -> int:
        return round(self.jitter * 1000)


def check_slot_kwarg(
    kwarg: str, where: str, *, app: Celery | None, task: str, args: Any, kwargs: Any
) -> None:
    """Refuse a ``slot_kwarg`` an entry's kwargs give already, or that its task (when
    beat's app registers it) does not take: Celery would refuse every slot's message.
    ``where`` names the setting as written (see :meth:`EntryPolicy.from_options`)."""
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    if kwarg in kwargs:
        raise ConfigurationError(where, kwarg, "a name the entry's kwargs do not give already")
    registered = app.tasks.get(task) if app is not None else None
    args = args if isinstance(args, (list, tuple)) else None
    if registered is None or args is None or not getattr(registered, "typing", False):
        return
    try:
        registered.__header__(*args, **{**kwargs, kwarg: ""})
    except TypeError as exc:
        raise ConfigurationError(
            where, kwarg, f"a keyword argument task {task!r} takes ({exc})"
        ) from None


def _moment_ms(value: dt.datetime | str | None, option: str) -> int | None:
    """A start or end time in epoch ms; refuses what does not name one instant."""
    if value is None:
        return None
    moment: dt.datetime | str | None = value
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if not isinstance(moment, dt.datetime) or moment.utcoffset() is None:
        raise ConfigurationError(
            option, value, "an aware datetime or ISO 8601 text with a UTC offset, such as "
            "'2026-12-24T18:00:00+01:00'",
        )  # fmt: skip
    return round(moment.timestamp() * 1000)


class Entry(ScheduleEntry):  # type: ignore[misc]
    """A beat schedule entry whose ``options`` may carry ``"singleton_beat"`` settings."""

    def publish_options(self) -> dict[str, Any]:
        """The entry's options as Celery should see them (ours taken out)."""
        return {k: v for k, v in self.options.items() if k != OPTION}


NOTHING_HELD: frozenset[int] = frozenset()
_SHARED_POLICIES: dict[float, EntryPolicy] = {}
"""The policy of entries without per-entry settings, per misfire grace."""


@dataclasses.dataclass(slots=True)
class Plan:
    """The scheduler's view of one entry: its slots and the next slot not known handled."""

    name: str
    entry: Entry
    slots: Slots
    policy: EntryPolicy
    next_slot: int | None = None
    wake: int | None = None
    """When the scheduler looks at this entry next (ms)."""
    held: set[int] | frozenset[int] = NOTHING_HELD
    """Slots another replica had claimed when this one looked: looked at again until done,
    so that a claimant that dies costs a delay, never the slot. (One empty set shared by
    every plan until it holds a slot: a schedule of a million entries holds few.)"""

    def hold(self, slot: int) -> None:
        """Look at ``slot`` again until it is done."""
        if not isinstance(self.held, set):
            self.held = set()
        self.held.add(slot)

    def release(self, slot: int) -> None:
        """``slot`` is done (or decided here)."""
        if slot in self.held:
            held = set(self.held)
            held.discard(slot)
            self.held = held or NOTHING_HELD

    @classmethod
    def build(cls, entry: Entry, app_tz: dt.tzinfo, grace: float) -> Plan:
        policy = EntryPolicy.from_options(entry.name, entry.options or {}, grace)
        try:
            tz = (
                ZoneInfo(policy.timezone)
                if policy.timezone
                else schedule_tz(entry.schedule, app_tz)
            )
        except ConfigurationError as exc:
            where = f"beat_schedule[{entry.name!r}]['schedule'].{exc.name}"
            raise ConfigurationError(where, exc.value, exc.accepted) from None
        if policy.slot_kwarg is not None:
            where = f"beat_schedule[{entry.name!r}]['options'][{OPTION!r}]['slot_kwarg']"
            check_slot_kwarg(
                policy.slot_kwarg, where, app=entry.app, task=entry.task, args=entry.args,
                kwargs=entry.kwargs,
            )  # fmt: skip
        slots = slots_for(entry.name, entry.schedule, tz)
        start, end = policy.start_ms, policy.end_ms
        if start is not None or end is not None:
            if isinstance(slots, IntervalSlots):  # counted from its start, no shared anchor
                slots = interval_slots(slots.every_ms, start or 0)
            slots = BoundedSlots(slots, start, end)
        return cls(entry.name, entry, slots, policy)

    def offset(self, slot: int) -> int:
        """How long after its time ``slot`` is sent (ms): its jitter."""
        return jitter_offset(self.name, slot, self.policy.jitter_ms)

    def send_at(self, slot: int | None) -> int | None:
        """When ``slot`` falls due to be sent (ms): its time plus its jitter (the very
        same int without jitter: a plan's wake-up then costs no number of its own)."""
        if slot is None or not self.policy.jitter_ms:
            return slot
        return slot + self.offset(slot)

    def _horizon(self, now: int) -> int:
        """The latest slot time that may be sent at ``now``: ``now``, or with jitter just
        before the first slot whose send time is still ahead (an entry's slots are sent
        in order)."""
        jitter = self.policy.jitter_ms
        if not jitter or self.next_slot is None:
            return now
        slot = self.slots.next_after(max(now - jitter, self.next_slot - 1))
        while slot is not None and slot <= now:
            if slot + self.offset(slot) > now:
                return slot - 1
            slot = self.slots.next_after(slot)
        return now

    @property
    def every_ms(self) -> int | None:
        return self.slots.every_ms if isinstance(self.slots, IntervalSlots) else None

    def anchor(self, anchor_ms: int) -> None:
        """Count an interval entry's slots from ``anchor_ms`` (the one the store agreed)."""
        if isinstance(self.slots, IntervalSlots):
            self.slots = interval_slots(self.slots.every_ms, anchor_ms)

    def newest_due(self, now: int) -> int | None:
        """The newest slot due by ``now`` from ``next_slot`` on, or None if none is due."""
        now = self._horizon(now)
        slot = self.next_slot
        if slot is None or slot > now:
            return None
        if isinstance(self.slots, IntervalSlots):
            return self.slots.next_after(now) - self.slots.every_ms
        while True:
            following = self.slots.next_after(slot)
            if following is None or following > now:
                return slot
            slot = following

    def due(self, now: int, limit: int) -> tuple[list[int], int]:
        """The slots to claim now, oldest first: the held ones and every slot from
        ``next_slot`` up to ``now``, at most ``limit`` of the latter (the newest); with
        the number of older ones left out."""
        now = self._horizon(now)
        slot, left_out = self.next_slot, 0
        if isinstance(self.slots, IntervalSlots) and slot is not None and slot <= now:
            newest = self.slots.next_after(now) - self.slots.every_ms
            start = max(slot, newest - (limit - 1) * self.slots.every_ms)
            left_out = self.missed_between(slot - 1, start)
            slot = start
        fresh: list[int] = []
        while slot is not None and slot <= now:
            fresh.append(slot)
            slot = self.slots.next_after(slot)
        left_out += max(0, len(fresh) - limit)
        return sorted(self.held.union(fresh[-limit:])), left_out

    def slot_before(self, slot: int, after: int) -> int:
        """The last slot before ``slot`` and after ``after`` (``slot`` itself if none)."""
        if isinstance(self.slots, IntervalSlots):
            previous = slot - self.slots.every_ms
            return previous if previous > after else slot
        found, candidate = slot, self.slots.next_after(after)
        while candidate is not None and candidate < slot:
            found, candidate = candidate, self.slots.next_after(candidate)
        return found

    def missed_between(self, after: int, before: int, limit: int = 100_000) -> int:
        """How many slots lie strictly between ``after`` and ``before``."""
        if isinstance(self.slots, IntervalSlots):
            return self.slots.count_between(after, before - 1)
        count, slot = 0, self.slots.next_after(after)
        while slot is not None and slot < before and count < limit:
            count += 1
            slot = self.slots.next_after(slot)
        return count

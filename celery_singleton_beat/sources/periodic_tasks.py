"""A periodic task kept as a database row, as django-celery-beat and sqlalchemy-celery-beat
keep it: what its fields mean for its slots, decided once for both sources.

- ``interval``, ``crontab`` (in the crontab's own timezone), ``solar``: the entry's slots;
  a clocked row: one slot at its ``clocked_time``;
- ``start_time``: no slot before it; ``expires`` (a datetime): no slot from it on;
- ``one_off``: one slot, the schedule's first at least :data:`ONE_OFF_DELAY` after the row
  was saved (so that every replica has seen the row before it falls due); the replica
  that sends it disables the row, as the library's own scheduler does;
- ``headers`` (JSON): the message's headers, except the key ``"singleton_beat"``, which
  carries the row's per-entry settings (``jitter``, ``slot_kwarg``, ``pause_on_failure``,
  ``misfire``, ``overlap``, ...: :class:`~celery_singleton_beat.core.entries.EntryPolicy`)
  into the entry's options, checked when the row is read (:func:`take_policies`);
- ``last_run_at`` and ``total_run_count``: written once per slot by the replica that sent
  it, each slot counted once even when sent again after a replica died (a table of
  counted slots, unique on entry and slot, written in the same transaction as the counts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celery_singleton_beat.core.entries import OPTION, EntryPolicy, check_slot_kwarg
from celery_singleton_beat.core.slots import (
    BoundedSlots,
    OnceSlots,
    Slots,
    SlotSchedule,
    schedule_tz,
    slots_for,
)
from celery_singleton_beat.errors import ConfigurationError

if TYPE_CHECKING:
    from celery import Celery

#: How long after a one-off row is saved its single slot falls, at the earliest (ms).
ONE_OFF_DELAY = 2000
#: How long a counted slot is remembered (ms): far longer than a slot can be sent again.
COUNTED_KEPT_MS = 24 * 3600 * 1000
#: Seconds between two clean-ups of the counted slots, per replica.
FORGET_EVERY = 600.0
#: Per-entry settings a row gives in its own columns instead, with what to use.
ROW_COLUMNS = {
    "start_time": "the row's start_time column (no slot before it)",
    "end_time": "the row's expires column (no slot from it on)",
    "timezone": "a crontab row's zone is its crontab's timezone column",
}


def row_schedule(
    app: Celery,
    name: str,
    schedule: Any,
    *,
    clocked: dt.datetime | None,
    start: dt.datetime | None,
    expires: dt.datetime | None,
    one_off: bool,
    changed: dt.datetime | None,
) -> Any:
    """A row's schedule (``schedule``: its interval, crontab or solar; ignored for a
    clocked row); with a start, an end, ``one_off`` or a clocked time, its slot times as a
    :class:`~celery_singleton_beat.core.slots.SlotSchedule`. Aware datetimes."""
    start_ms, end_ms = _ms(start), _ms(expires)
    earliest = (_ms(changed) or 0) + ONE_OFF_DELAY if one_off else 0
    if clocked is not None:
        at = max(_ms(clocked) or 0, earliest)
        once = BoundedSlots(OnceSlots(at), start_ms, end_ms).next_after(at - 1)
        return SlotSchedule(OnceSlots(once), app=app)
    if start_ms is None and end_ms is None and not one_off:
        return schedule  # the scheduler honours a TzAwareCrontab's own zone
    inner = slots_for(name, schedule, schedule_tz(schedule, app.timezone))
    bounded: Slots = BoundedSlots(inner, start_ms, end_ms)
    if one_off:
        bounded = OnceSlots(bounded.next_after(max(earliest, start_ms or 0) - 1))
    return SlotSchedule(bounded, app=app)


def routing(row: Any) -> dict[str, Any]:
    """The message options a row sets itself (``queue``, ``exchange``, ``routing_key``,
    ``priority``), as both libraries' schedulers pass them."""
    return {
        name: getattr(row, name)
        for name in ("queue", "exchange", "routing_key", "priority")
        if getattr(row, name) not in (None, "")
    }


def take_policies(app: Celery, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The entry ``spec`` of row ``name`` with the per-entry settings of its headers'
    ``"singleton_beat"`` key moved into its options (so the key never reaches the
    worker's headers), checked as ``beat_schedule``'s are: a bad value raises
    :class:`~celery_singleton_beat.errors.ConfigurationError` naming the row and the key
    as written, and the source leaves that row out."""
    options = spec["options"]
    headers = options.get("headers")
    if not isinstance(headers, dict) or OPTION not in headers:
        return spec
    options["headers"] = {k: v for k, v in headers.items() if k != OPTION}
    settings = headers[OPTION]
    where = f"PeriodicTask {name!r} headers[{OPTION!r}]"
    for key, column in ROW_COLUMNS.items():
        if isinstance(settings, dict) and key in settings:
            raise ConfigurationError(f"{where}[{key!r}]", settings[key], column)
    policy = EntryPolicy.from_options(name, {OPTION: settings}, EntryPolicy.misfire_grace, where)
    if policy.slot_kwarg is not None:
        check_slot_kwarg(
            policy.slot_kwarg, f"{where}['slot_kwarg']", app=app, task=spec["task"],
            args=spec["args"], kwargs=spec["kwargs"],
        )  # fmt: skip
    options[OPTION] = settings
    return spec


def per_entry(counted: Iterable[tuple[str, int]]) -> dict[str, int]:
    """How many newly counted slots each entry has."""
    counts: dict[str, int] = {}
    for name, _slot in counted:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _ms(moment: dt.datetime | None) -> int | None:
    return None if moment is None else round(moment.timestamp() * 1000)

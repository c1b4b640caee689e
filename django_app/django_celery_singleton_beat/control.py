"""Pause, resume, run now and backfill from the admin, for an entry of any schedule source.

The page lists the entries the beat replicas schedule (``beat_schedule``,
django-celery-beat's rows, runtime entries), each with its source, whether it is paused
and its next times. The actions go through :mod:`celery_singleton_beat.schedule`, so
every replica follows them within two seconds, and each is recorded as a
:class:`~django_celery_singleton_beat.models.ScheduleAction` with the user who asked.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from celery_singleton_beat import schedule
from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.core.slots import to_datetime
from celery_singleton_beat.ops.cluster import entry_specs
from celery_singleton_beat.runtime import Runtime

from .models import ScheduleAction

logger = logging.getLogger(__name__)

#: How many next times the page shows per entry.
NEXT_TIMES = 3


def rows(app: Any, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per entry: name, source, task, paused (by whom) and next times."""
    specs, owners = entry_specs(app)
    paused = schedule.paused(app)
    anchors = _anchors(app, specs)
    moment = now or dt.datetime.now(dt.timezone.utc)
    found = []
    for name, spec in sorted(specs.items()):
        pause = paused.get(name)
        found.append({
            "name": name, "source": owners[name], "task": spec.get("task", ""),
            "paused": pause is not None, "paused_by": (pause or {}).get("by", ""),
            "pause_reason": (pause or {}).get("reason", ""),
            "next": [] if pause else _next_times(app, name, spec, anchors, moment),
        })  # fmt: skip
    return found


def act(
    app: Any, action: str, name: str, user: str, span: tuple[dt.datetime, dt.datetime] | None = None
) -> ScheduleAction:
    """Carry out ``action`` (pause, resume, run_now, backfill over ``span``: start and end)
    on entry ``name`` and record it."""
    run_id = ""
    if action == ScheduleAction.Action.BACKFILL:
        if span is None:
            raise ValueError("a backfill needs its start and end")
        run_id = schedule.backfill(app, name, *span, by=user)
    elif action == ScheduleAction.Action.PAUSE:
        schedule.pause(app, name, by=user)
    elif action == ScheduleAction.Action.RESUME:
        schedule.resume(app, name)
    elif action == ScheduleAction.Action.RUN_NOW:
        run_id = schedule.run_now(app, name, by=user)
    else:
        raise ValueError(f"unknown action {action!r}")
    logger.info("singleton beat: %s asked for %s of entry %r", user, action, name)
    return ScheduleAction.objects.create(entry=name, action=action, user=user, run_id=run_id)


def backfills(app: Any) -> list[dict[str, Any]]:
    """The backfills kept, newest first, with their counts and when each was asked for."""
    found = schedule.backfill_requests(app)
    return [{**b, "asked": to_datetime(b["asked"])} for b in reversed(found)]


def _anchors(app: Any, specs: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """The interval entries' shared anchors on the masters (their slots start there)."""
    plans = {name: _plan(app, name, spec) for name, spec in specs.items()}
    every = {n: p.every_ms for n, p in plans.items() if p is not None and p.every_ms}
    if not every:
        return {}
    store = Runtime.of(app).open_store(0.5)
    try:
        stored = store.anchors(list(every.items()))
    except Exception as exc:
        logger.warning("singleton beat: interval anchors cannot be read: %s", exc)
        return {}
    finally:
        store.close()
    return {name: anchor for name, anchor in zip(every, stored, strict=True) if anchor is not None}


def _plan(app: Any, name: str, spec: Mapping[str, Any]) -> Plan | None:
    try:
        entry = Entry(name=name, app=app, **dict(spec))
        return Plan.build(entry, app.timezone, 300.0)
    except Exception as exc:
        logger.warning("singleton beat: entry %r cannot be read: %s", name, exc)
        return None


def _next_times(
    app: Any, name: str, spec: Mapping[str, Any], anchors: dict[str, int], now: dt.datetime
) -> list[dt.datetime]:
    plan = _plan(app, name, spec)
    if plan is None:
        return []
    if name in anchors:
        plan.anchor(anchors[name])
    times: list[dt.datetime] = []
    slot = plan.slots.next_after(round(now.timestamp() * 1000))
    while slot is not None and len(times) < NEXT_TIMES:
        times.append(to_datetime(slot))
        slot = plan.slots.next_after(slot)
    return times

"""Backfill a past time range of an entry: each of its slots that did not run, sent once.

::

    from celery_singleton_beat import schedule

    backfill_id = schedule.backfill(app, "report", start, end, rate=5)
    schedule.backfill_progress(app, backfill_id)  # {"total": 30, "settled": 12, ...}

The request is kept in the runtime schedule's document; the beat replicas send its slots
(:mod:`celery_singleton_beat.beat.backfill`), at most ``rate`` a second together, each
with the task id and headers beat gives that slot. A slot that ran (its fence says it
was sent) is not sent again, and two backfills over the same slots send each once: every
slot goes through the fence beat claims, and a fence of its own that backfills share.
A fence says whether a slot ran only for ``singleton_beat_fence_retention`` (default a
day) after it, so a backfill reaches back that far, less the time it takes and an hour.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celery_singleton_beat import sources
from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.core.schema import Outcome
from celery_singleton_beat.core.slots import IntervalSlots, slot_label
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.runtime import Runtime, load_task_modules
from celery_singleton_beat.schedule.api import API_TIMEOUT, _one_of, _store
from celery_singleton_beat.sources.schedule_document import (
    BACKFILL,
    BACKFILL_KEPT_MS,
    HAD_RUN,
    ScheduleDocument,
)

if TYPE_CHECKING:
    from celery import Celery

    from celery_singleton_beat.stores.base import SlotStore

#: Slots sent per second by all replicas together, unless the request says.
DEFAULT_RATE = 10.0
#: The most slots one backfill may hold (a longer range: several backfills).
MAX_SLOTS = 10_000


def backfill(
    app: Celery,
    name: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    rate: float = DEFAULT_RATE,
    by: str = "",
) -> str:
    """Send, once, every slot of entry ``name`` from ``start`` (inclusive) to ``end``
    (exclusive) that did not run, ``rate`` slots a second; returns the backfill's id.

    ``start`` and ``end`` are datetimes (naive ones in the app's timezone), ``end`` not
    after now; ``by`` says who asked. The beat replicas send the slots (with ``"runtime"``
    or not among the schedule sources); a slot after the entry's newest handled one is
    left to beat first (its misfire policy), and a paused entry's slots wait for resume.
    """
    now = round(time.time() * 1000)
    first, last = _ms(app, "start", start), _ms(app, "end", end)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
        raise ConfigurationError("rate", rate, "a positive number of slots a second")
    if first > now:
        raise ConfigurationError(
            "start",
            _iso(start),
            "a time in the past; this one is in the future (beat sends those slots)",
        )
    if first >= last:
        raise ConfigurationError("end", _iso(end), f"a time after start ({_iso(start)})")
    if last > now:
        raise ConfigurationError("end", _iso(end), "a time not after now (later slots are beat's)")
    runtime = Runtime.of(app)
    with _slot_store(app) as store:
        slots = _slots(app, store, name, first, last)
    until = now + round(len(slots) * 1000 / rate) + BACKFILL_KEPT_MS
    oldest = until - round(runtime.config.fence_retention * 1000)
    if first < oldest:
        raise ConfigurationError(
            "start", _iso(start), f"a time after {slot_label(oldest)}: a slot's fence, which says "
            f"whether it ran, is kept singleton_beat_fence_retention "
            f"({runtime.config.fence_retention:g} s), and this backfill is worked on until "
            f"{slot_label(until)}",
        )  # fmt: skip
    request = {"entry": name, "slots": slots, "rate": float(rate), "at": now, "until": until,
               "by": by, "asked": now}  # fmt: skip

    def change(doc: dict[str, Any]) -> str:
        for old in [i for i, b in doc["backfills"].items() if b["until"] < now]:
            del doc["backfills"][old]
        backfill_id = secrets.token_hex(6)
        doc["backfills"][backfill_id] = request
        return backfill_id

    with _store(app) as document:
        result: str = document.edit(change)
    return result


def backfill_progress(app: Celery, backfill_id: str) -> dict[str, Any]:
    """How far a backfill is: ``entry``, ``total`` slots, ``settled`` (``sent`` by it, or
    found to have run: ``had_run``), and ``state``: ``"running"``, ``"done"`` (all settled)
    or ``"expired"`` (not all settled within an hour of its pacing: no replica ran); and
    how many beat ``replicas`` are alive to send its slots."""
    with _slot_store(app) as store:
        _rev, doc = ScheduleDocument(store).read()
        request = doc["backfills"].get(backfill_id)
        if request is None:
            known = sorted(doc["backfills"])
            raise ConfigurationError("backfill_id", backfill_id, _one_of(backfill_id, known))
        mark = request["entry"] + BACKFILL
        outcomes = store.outcomes([(mark, s) for s in request["slots"]])
        replicas = len(store.replicas())
    sent = outcomes.count(Outcome.DISPATCHED.value)
    had_run = outcomes.count(HAD_RUN)
    total, settled = len(outcomes), sent + had_run
    now = round(time.time() * 1000)
    state = "done" if settled == total else "expired" if now > request["until"] else "running"
    return {"id": backfill_id, "entry": request["entry"], "by": request["by"],
            "asked": request["asked"], "total": total, "settled": settled, "sent": sent,
            "had_run": had_run, "state": state, "replicas": replicas}  # fmt: skip


def backfill_requests(app: Celery) -> list[dict[str, Any]]:
    """Every backfill kept (an hour past its pacing), oldest first, with its progress."""
    with _store(app) as document:
        _rev, doc = document.read()
    ordered = sorted(doc["backfills"].items(), key=lambda item: (item[1]["asked"], item[0]))
    return [backfill_progress(app, backfill_id) for backfill_id, _request in ordered]


@contextmanager
def _slot_store(app: Celery) -> Iterator[SlotStore]:
    store = Runtime.of(app).open_store(API_TIMEOUT)
    try:
        yield store
    finally:
        store.close()


def _slots(app: Celery, store: SlotStore, name: str, first: int, last: int) -> list[int]:
    """The slots of entry ``name`` in ``[first, last)``, as beat counts them."""
    load_task_modules(app)
    given, _owners, _conflicts = sources.read_once(app)
    spec = given.get(name)
    if spec is None:
        raise ConfigurationError(
            "name", name, f"the name of an entry of a schedule source, {_one_of(name, given)}"
        )
    grace = Runtime.of(app).config.misfire_grace
    plan = Plan.build(Entry(**dict(spec, name=name, app=app)), app.timezone, grace)
    if isinstance(plan.slots, IntervalSlots):
        anchor = store.anchors([(name, plan.slots.every_ms)])[0]
        if anchor is None:
            raise ConfigurationError(
                "name", name, "an entry beat has scheduled already (no replica has stored "
                "the anchor its interval's slots are counted from)",
            )  # fmt: skip
        plan.anchor(anchor)
    found: list[int] = []
    slot = plan.slots.next_after(first - 1)
    while slot is not None and slot < last:
        if len(found) == MAX_SLOTS:
            raise ConfigurationError(
                "end", slot_label(last), f"a range of at most {MAX_SLOTS} slots of {name!r} "
                f"(the {MAX_SLOTS + 1}th is at {slot_label(slot)}): backfill it in parts",
            )  # fmt: skip
        found.append(slot)
        slot = plan.slots.next_after(slot)
    if not found:
        raise ConfigurationError(
            "start/end", (slot_label(first), slot_label(last)), f"a range with a slot of {name!r}"
        )
    return found


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def _ms(app: Celery, what: str, moment: Any) -> int:
    if not isinstance(moment, dt.datetime):
        raise ConfigurationError(what, moment, "a datetime (naive: in the app's timezone)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=app.timezone)
    stamp: float = moment.timestamp()
    return round(stamp * 1000)

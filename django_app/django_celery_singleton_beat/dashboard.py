"""What the dashboard shows, computed on the server: replicas, per-entry counts, percentiles,
the execution-window timeline and every scheduled entry in words.

The timeline is an SVG; each entry (of every schedule source) comes with its next times,
whether it is paused (by whom, since when) and the runs asked for now."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from celery.beat import ScheduleEntry
from celery.schedules import crontab
from celery.utils.imports import symbol_by_name
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from celery_singleton_beat import schedule
from celery_singleton_beat._compat import created_apps, current_app
from celery_singleton_beat.core.decide import ON_TIME
from celery_singleton_beat.core.entries import OPTION, Plan
from celery_singleton_beat.core.slots import schedule_tz, to_datetime
from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.ops import cluster as overview
from celery_singleton_beat.runtime import Runtime, load_task_modules
from celery_singleton_beat.schedule import RUN_NOW

from . import history
from .models import SlotDispatch, TaskRun

logger = logging.getLogger(__name__)

WINDOWS = {"5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
DEFAULT_WINDOW = "24h"
TIMELINE_RUNS = 2_000
STATS_RUNS = 20_000
PALETTE = ("#2f6fb3", "#d9822b", "#3a9a5b", "#8e5bb5", "#c23b3b", "#2b9aa0", "#9a7b2f", "#5b6f8e")
RAN = (*TaskRun.FINISHED, TaskRun.Status.RETRY, TaskRun.Status.STARTED)
#: How each state of a run is drawn on the timeline (SVG attributes of its bar), and what
#: the legend says about it. The fill is always the node's colour.
RUN_STATES: dict[str, tuple[str, str]] = {
    "success": ("", gettext_noop("finished successfully")),
    "running": (
        ' fill-opacity="0.45" stroke="#333" stroke-width="1.5" stroke-dasharray="4 2"',
        gettext_noop("still running (drawn up to now)"),
    ),
    "retry": (
        ' stroke="#d9822b" stroke-width="2"',
        gettext_noop("failed, retried as a new attempt"),
    ),
    "failed": (' stroke="#c23b3b" stroke-width="2"', gettext_noop("failed or lost its lock")),
}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def celery_app(path: str | None = None) -> Any:
    """The project's Celery app: ``SINGLETON_BEAT_CELERY_APP``, else the one app created.

    Web requests run in threads where Celery's "current app" is its empty fallback, so
    the app the project made at start-up (``proj/celery.py``) is looked up instead.
    """
    if path:
        app = symbol_by_name(path)
    else:
        made = [a for a in created_apps() if a.main != "default"]
        app = made[0] if len(made) == 1 else current_app()
    load_task_modules(app)  # the task modules give each task's lock TTL
    return app


@dataclasses.dataclass
class ScheduleView:
    """The entries the beat replicas schedule, from every source, and their controls."""

    entries: dict[str, ScheduleEntry]
    sources: dict[str, str]
    paused: dict[str, dict[str, Any]]
    """Paused entry name -> who paused it (``by``) and when (``at``, ms)."""
    runs: dict[str, list[dict[str, Any]]]
    """Entry name -> the runs asked for now (``schedule.run_requests``), oldest first."""
    error: str | None = None
    """Why the sources or the controls on the masters could not be read."""


def schedule_view(app: Any) -> ScheduleView:
    """What the replicas schedule, read through the sources the control page reads
    (``beat_schedule``, django-celery-beat's rows, runtime entries). When they cannot be
    read (no masters configured or reachable), ``beat_schedule`` alone, and why."""
    error = None
    try:
        specs, sources = overview.entry_specs(app)
        paused = schedule.paused(app)
        requests = schedule.run_requests(app)
    except Exception as exc:
        logger.warning("dashboard: the schedule sources cannot be read: %s", exc)
        error = f"{type(exc).__name__}: {exc}"
        specs = dict(app.conf.beat_schedule or {})
        sources = dict.fromkeys(specs, "beat_schedule")
        paused, requests = {}, []
    entries = {}
    for name, spec in specs.items():
        try:
            entries[name] = ScheduleEntry(**dict(spec, name=name, app=app))
        except Exception as exc:
            logger.warning("dashboard: entry %r cannot be read: %s", name, exc)
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in requests:
        runs[request["entry"]].append(request)
    return ScheduleView(entries, sources, paused, dict(runs), error)


def beat_entries(app: Any) -> dict[str, ScheduleEntry]:
    """The entries the replicas schedule, of every source (bad entries left out, logged)."""
    return schedule_view(app).entries


def entry_zone(entry: ScheduleEntry, default: dt.tzinfo) -> dt.tzinfo:
    """The zone an entry's slots are in: its ``timezone`` setting, a django-celery-beat
    crontab's own zone, else ``default`` (the app's)."""
    policy = (entry.options or {}).get(OPTION)
    zone = policy.get("timezone") if isinstance(policy, dict) else None
    try:
        return ZoneInfo(zone) if zone else schedule_tz(entry.schedule, default)
    except Exception:
        return default


@dataclasses.dataclass
class ReplicaView:
    error: str | None
    replicas: list[dict[str, Any]]
    masters: list[overview.MasterState]
    """Each Redis master's state (none on a store without masters)."""
    store: str = ""
    """The slot store as it describes itself (``SlotStore.describe()``)."""


def replicas(app: Any) -> ReplicaView:
    """Live beat replicas, from their heartbeats in the app's slot store (their age on the
    store's clock), and the state of each Redis master the store runs on."""
    try:
        store = Runtime.of(app).store
    except Exception as exc:
        return ReplicaView(f"{type(exc).__name__}: {exc}", [], [])
    masters = overview.master_states(store.servers(), timeout=0.3)
    try:
        rows = store.replicas()
    except StoreUnavailable as exc:
        return ReplicaView(str(exc), [], masters, store.describe())
    for row in rows:
        row["ago"] = row.get("seen_ago")  # on the store's clock, not this host's
    return ReplicaView(None, rows, masters, store.describe())


def expected_slots(
    schedule: Any, name: str, tz: dt.tzinfo, *, start: dt.datetime, end: dt.datetime,
    limit: int = 100_000,
) -> int | None:  # fmt: skip
    """How many slots the schedule has in (start, end]; None when it cannot be counted."""
    try:
        times = overview.slot_times(schedule, name, tz, start, until=end)
        return sum(1 for _ in itertools.islice(times, limit))
    except Exception:
        return None


def next_times(entry: ScheduleEntry, app_tz: dt.tzinfo, count: int = 5) -> list[dt.datetime]:
    """The entry's next slot times as beat plans them (its zone, start and end time)."""
    try:
        slots = Plan.build(entry, app_tz, 300.0).slots
        found: list[dt.datetime] = []
        slot = slots.next_after(round(dt.datetime.now(dt.timezone.utc).timestamp() * 1000))
        while slot is not None and len(found) < count:
            found.append(to_datetime(slot))
            slot = slots.next_after(slot)
        return found
    except Exception:
        return []


def entry_rows(
    app: Any, since: dt.datetime, until: dt.datetime, using: str,
    view: ScheduleView | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per entry: expected, dispatched, executed and missed slots (those missed that a
    misfire decided, whose publish failed, and undecided), duplicates prevented, slots
    that did not run because the previous run held the lock or beat held them back
    (overlapped), and how many slots were dispatched more than ON_TIME late (with the
    latest). A run now's slots (entry ``{name}@run-now:{id}``) count with its entry's
    runs now, not as an entry."""
    view = view or schedule_view(app)
    decisions = _decisions(since, until, using)
    runs: dict[str, Mapping[str, Any]] = {
        row["entry"]: row
        for row in TaskRun.objects.using(using)
        .filter(started_at__gt=since, started_at__lte=until)
        .exclude(entry="")
        .values("entry")
        .annotate(
            executed=Count("id", filter=Q(attempt=0, status__in=RAN)),
            held=Count("id", filter=Q(status=TaskRun.Status.SKIPPED_DUPLICATE)),
        )
    }
    overlapped = overlapped_slots(since, until, using)
    extra: dict[str, dict[str, int]] = defaultdict(lambda: {"dispatched": 0, "executed": 0})
    for name in {n for n in (*decisions, *runs) if RUN_NOW in n}:
        parent = extra[name.partition(RUN_NOW)[0]]
        parent["dispatched"] += decisions.get(name, {}).get("dispatched", 0)
        parent["executed"] += runs.get(name, {}).get("executed", 0)
    names = sorted(n for n in set(view.entries) | set(decisions) | set(runs) if RUN_NOW not in n)
    expected = _expected(app, view, names, since=since, until=until, using=using)
    rows = []
    for name in names:
        entry = view.entries.get(name)
        d, r = decisions.get(name, {}), runs.get(name, {})
        dispatched, held_back = d.get("dispatched", 0), d.get("held_back", 0)
        missed = None if expected[name] is None else max(0, expected[name] - dispatched - held_back)
        misfired, failed = d.get("misfired") or 0, d.get("failed", 0)
        rows.append({
            "name": name,
            "task": entry.task if entry is not None else "",
            "configured": entry is not None,
            "expected": expected[name],
            "dispatched": dispatched,
            "executed": r.get("executed", 0),
            "missed": missed,
            "misfired": misfired,
            "publish_failed": failed,
            "undecided": None if missed is None else max(0, missed - misfired - failed),
            "republished": d.get("republished", 0),
            "duplicates": r.get("held", 0) - overlapped.get(name, (0, 0))[1],
            "overlapped": overlapped.get(name, (0, 0))[0] + held_back,
            "late": d.get("late_slots", 0),
            "late_max": d.get("latest"),
            "source": view.sources.get(name, ""),
            "paused": name in view.paused,
            "run_now_dispatched": extra[name]["dispatched"] if name in extra else 0,
            "run_now_executed": extra[name]["executed"] if name in extra else 0,
        })  # fmt: skip
    return rows


def _decisions(since: dt.datetime, until: dt.datetime, using: str) -> dict[str, Mapping[str, Any]]:
    """Per entry, its slot decisions in the window, counted by outcome (a misfire by the
    slots it stands for)."""
    outcome = SlotDispatch.Outcome
    return {
        row["entry"]: row
        for row in SlotDispatch.objects.using(using)
        .filter(slot__gt=since, slot__lte=until)
        .values("entry")
        .annotate(
            dispatched=Count("id", filter=Q(outcome=outcome.DISPATCHED)),
            republished=Count("id", filter=Q(publishes__gt=1)),
            misfired=Sum("slots", filter=Q(outcome=outcome.SKIPPED_MISFIRE)),
            failed=Count("id", filter=Q(outcome=outcome.PUBLISH_FAILED)),
            held_back=Count("id", filter=Q(outcome=outcome.SKIPPED_OVERLAP)),
            late_slots=Count("id", filter=Q(outcome=outcome.DISPATCHED, late__gt=ON_TIME)),
            latest=Max("late", filter=Q(outcome=outcome.DISPATCHED)),
        )
    }


def _expected(
    app: Any, view: ScheduleView, names: Sequence[str], *, since: dt.datetime,
    until: dt.datetime, using: str,
) -> dict[str, int | None]:  # fmt: skip
    """Per entry, the slots its schedule owed in the window: counted over each version of
    its schedule that beat recorded (see :mod:`.history`). An entry that left the schedule
    unseen (no version says so) owed nothing after its newest slot decision. An entry with
    no recorded version: its current schedule's slots from the window's start or its
    first recorded slot, whichever is later."""
    versions = history.versions(names, until, using)
    seen = {
        row["entry"]: (row["first"], row["last"])
        for row in SlotDispatch.objects.using(using).filter(entry__in=names).values("entry")
        .annotate(first=Min("slot"), last=Max("slot"))
    }  # fmt: skip
    expected: dict[str, int | None] = {}
    for name in names:
        entry = view.entries.get(name)
        first, last = seen.get(name, (None, None))
        if name in versions:
            newest = versions[name][-1]
            left_unseen = entry is None and bool(newest.slots)  # no version says it left
            end = min(until, last or newest.since) if left_unseen else until
            expected[name] = history.owed(versions[name], since, end)
        elif entry is not None:
            start = since if first is None else max(since, first - dt.timedelta(milliseconds=1))
            zone = entry_zone(entry, app.timezone)
            expected[name] = expected_slots(entry.schedule, name, zone, start=start, end=until)
        else:
            expected[name] = None
    return expected


def overlapped_slots(
    since: dt.datetime, until: dt.datetime, using: str
) -> dict[str, tuple[int, int]]:
    """Per entry: slots that never ran because every copy found the lock held, as
    (distinct slots, skipped rows).

    A copy skipped while a run of *its own* slot holds the lock (or ran) is a duplicate
    prevented. A copy skipped while the previous slot's run still held the entry's lock,
    with no run of its slot anywhere, is a slot that did not run: an overlap, not a
    duplicate, and never counted as one.
    """
    ran = TaskRun.objects.using(using).filter(
        entry=OuterRef("entry"), slot=OuterRef("slot"), status__in=RAN
    )
    rows = (
        TaskRun.objects.using(using)
        .filter(started_at__gt=since, started_at__lte=until, slot__isnull=False,
                status=TaskRun.Status.SKIPPED_DUPLICATE)
        .exclude(entry="")
        .annotate(ran=Exists(ran))
        .filter(ran=False)
        .values("entry")
        .annotate(slots=Count("slot", distinct=True), skipped=Count("id"))
    )  # fmt: skip
    return {row["entry"]: (row["slots"], row["skipped"]) for row in rows}


def task_rows(app: Any, since: dt.datetime, using: str, warning: float) -> list[dict[str, Any]]:
    """Per task: contention, lock wait p50/p95, runtime p50/p99 against the lock TTL."""
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"wait": [], "runtime": []})
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = (
        TaskRun.objects.using(using).filter(started_at__gt=since)
        .order_by("-started_at").values_list("task_name", "status", "lock_wait", "runtime")
    )  # fmt: skip
    for name, status, wait, runtime in rows[:STATS_RUNS]:
        counts[name][status] += 1
        counts[name]["total"] += 1
        if wait is not None:
            samples[name]["wait"].append(wait)
        if runtime is not None and status in TaskRun.FINISHED:
            samples[name]["runtime"].append(runtime)
    result = []
    for name in sorted(counts):
        ttl = overview.lock_ttl(app, app.tasks.get(name))
        runtime_p99 = percentile(samples[name]["runtime"], 99)
        longest = max(samples[name]["runtime"], default=None)
        near = ttl is not None and longest is not None and longest >= warning * ttl
        result.append({
            "name": name,
            "total": counts[name]["total"],
            "skipped_duplicate": counts[name][TaskRun.Status.SKIPPED_DUPLICATE],
            "skipped_lock_error": counts[name][TaskRun.Status.SKIPPED_LOCK_ERROR],
            "lock_lost": counts[name][TaskRun.Status.LOCK_LOST],
            "failures": counts[name][TaskRun.Status.FAILURE],
            "wait_p50": percentile(samples[name]["wait"], 50),
            "wait_p95": percentile(samples[name]["wait"], 95),
            "runtime_p50": percentile(samples[name]["runtime"], 50),
            "runtime_p99": runtime_p99,
            "longest": longest,
            "ttl": ttl,
            "near_ttl": near,
        })  # fmt: skip
    return result


def schedule_rows(
    app: Any, view: ScheduleView | None = None, using: str = "default"
) -> list[dict[str, Any]]:
    """Every scheduled entry in words (a crontab followed by the zone it is read in), with
    its next five times (none while paused), its source, who paused it and when, and the
    runs asked for now (newest first) with their recorded slot decision and run."""
    view = view or schedule_view(app)
    slot_entries = [f"{r['entry']}{RUN_NOW}{r['id']}" for runs in view.runs.values() for r in runs]
    recorded = _recorded(slot_entries, using)
    rows = []
    for name, entry in sorted(view.entries.items()):
        sched = entry.schedule
        zone = entry_zone(entry, app.timezone)
        words = overview.in_words(sched)
        if isinstance(sched, crontab):  # its times of day are read in this zone
            words = f"{words}, {zone_name(zone)}"
        pause = view.paused.get(name)
        rows.append({
            "name": name,
            "task": entry.task,
            "source": view.sources.get(name, ""),
            "cron": overview.cron_expression(sched) if isinstance(sched, crontab) else "",
            "words": words,
            "next": [] if pause else next_times(entry, app.timezone),
            "paused": pause is not None,
            "paused_by": (pause or {}).get("by", ""),
            "paused_at": _moment((pause or {}).get("at")),
            "pause_reason": (pause or {}).get("reason", ""),
            "runs_now": [_run_now(run, recorded) for run in reversed(view.runs.get(name, []))],
        })  # fmt: skip
    return rows


def _moment(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def _recorded(slot_entries: list[str], using: str) -> dict[str, tuple[str, str]]:
    """Per run-now slot entry: its recorded slot decision and its first attempt's status."""
    if not slot_entries:
        return {}
    outcomes = dict(
        SlotDispatch.objects.using(using).filter(entry__in=slot_entries)
        .values_list("entry", "outcome")
    )  # fmt: skip
    statuses = dict(
        TaskRun.objects.using(using).filter(entry__in=slot_entries, attempt=0)
        .order_by("started_at").values_list("entry", "status")
    )  # fmt: skip
    return {e: (outcomes.get(e, ""), statuses.get(e, "")) for e in slot_entries}


def _run_now(request: Mapping[str, Any], recorded: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """A run asked for now as the page shows it: its id, state, who asked, when, and its
    slot (entry ``{name}@run-now:{id}``) as recorded: slot decision and run status."""
    slot_entry = f"{request['entry']}{RUN_NOW}{request['id']}"
    outcome, status = recorded.get(slot_entry, ("", ""))
    return {
        "id": request["id"],
        "state": request["state"],
        "by": request["by"],
        "asked": _moment(request["asked"]),
        "due": _moment(request["at"]),
        "slot_entry": slot_entry,
        "outcome": outcome,
        "status": status,
    }


def colours(nodes: Iterable[str]) -> dict[str, str]:
    """A distinct colour per node (in name order), repeating only past the palette's size."""
    return {node: PALETTE[i % len(PALETTE)] for i, node in enumerate(sorted(set(nodes)))}


def run_state(run: TaskRun) -> str:
    """How the timeline draws a run that ran: one of RUN_STATES."""
    if run.status == TaskRun.Status.SUCCESS:
        return "success"
    if run.status == TaskRun.Status.STARTED and run.finished_at is None:
        return "running"
    if run.status == TaskRun.Status.RETRY:
        return "retry"
    return "failed"


def timeline_svg(runs: Iterable[TaskRun], since: dt.datetime, until: dt.datetime,
                 width: int = 1100, tz: dt.tzinfo = dt.timezone.utc,
                 ) -> tuple[str, dict[str, str]]:  # fmt: skip
    """One row per entry (or task), one bar per run coloured by node, skipped runs marked.

    The axis is labelled in ``tz`` and says which zone it is. A run's state (RUN_STATES)
    decides its outline: a run still in progress is never drawn like a failure.
    Returns the SVG text and the node -> colour legend.
    """
    runs = list(runs)
    label_w, row_h, top = 220, 22, 24
    rows = sorted({run.entry or run.task_name for run in runs})
    index = {name: i for i, name in enumerate(rows)}
    height = top + row_h * max(1, len(rows)) + 8
    span = max(1.0, (until - since).total_seconds())
    plot_w = width - label_w - 10

    def x(moment: dt.datetime) -> float:
        seconds = (moment - since).total_seconds()
        return label_w + max(0.0, min(1.0, seconds / span)) * plot_w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="singleton-timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="execution-window timeline" data-runs="{len(runs)}">',
        f'<rect x="{label_w}" y="{top - 4}" width="{plot_w}" height="{height - top}" '
        'fill="#f8f8f8"/>',
        f'<text class="zone" x="4" y="14" font-size="11" fill="#555">'
        f"{escape(zone_name(tz))}</text>",
    ]
    for i in range(5):
        at = (since + (until - since) * i / 4).astimezone(tz)
        tx = label_w + plot_w * i / 4
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height}" stroke="#ddd"/>'
        )
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(
            f'<text class="tick" x="{tx:.1f}" y="14" font-size="11" text-anchor="{anchor}" '
            f'fill="#555">{at:%m-%d %H:%M:%S}</text>'
        )
    for name, i in index.items():
        y = top + i * row_h
        parts.append(
            f'<text x="4" y="{y + 14}" font-size="12" fill="#222">{escape(name[:34])}</text>'
        )
    palette = colours(r.node for r in runs if r.status not in TaskRun.SKIPPED)
    legend: dict[str, str] = {}
    for run in runs:
        y = top + index[run.entry or run.task_name] * row_h
        start = run.started_at
        end = run.finished_at or until
        title = escape(
            f"{run.task_name}[{run.task_id}] attempt {run.attempt}: {run.status} on {run.node}"
            + (f" pid {run.pid}" if run.pid else "")
            + (f", {run.runtime:.3f}s" if run.runtime is not None else "")
            + (f", held by {run.holder}" if run.holder else "")
        )
        data = (
            f"data-task-id={quoteattr(run.task_id)} data-status={quoteattr(run.status)} "
            f"data-node={quoteattr(run.node)}"
        )
        if run.status in TaskRun.SKIPPED or run.status == TaskRun.Status.REVOKED:
            cx = x(start)
            parts.append(
                f'<path class="skipped" {data} d="M{cx - 4:.1f},{y + 4} L{cx + 4:.1f},{y + 16} '
                f'M{cx + 4:.1f},{y + 4} L{cx - 4:.1f},{y + 16}" stroke="#c23b3b" '
                f'stroke-width="2"><title>{title}</title></path>'
            )
            continue
        fill = legend.setdefault(run.node, palette[run.node])
        x0, x1 = x(start), x(end)
        state = run_state(run)
        parts.append(
            f'<rect class="run" {data} data-state="{state}" x="{x0:.1f}" y="{y + 3}" '
            f'width="{max(2.0, x1 - x0):.1f}" height="{row_h - 6}" fill="{fill}"'
            f"{RUN_STATES[state][0]}><title>{title}</title></rect>"
        )
    if not runs:
        parts.append(
            f'<text x="{label_w + 8}" y="{top + 14}" font-size="12" fill="#777">'
            "no runs recorded in this window</text>"
        )
    parts.append("</svg>")
    return "".join(parts), legend


def zone_name(tz: dt.tzinfo) -> str:
    """``Europe/Paris`` for a zoneinfo zone, ``UTC`` for UTC."""
    return str(getattr(tz, "key", None) or tz.tzname(None) or tz)


def state_legend() -> list[dict[str, str]]:
    """Each run state with its swatch (a small SVG drawn as on the timeline) and meaning."""
    return [
        {
            "state": state,
            "swatch": f'<svg width="22" height="14" class="swatch" data-state="{state}">'
            f'<rect x="2" y="2" width="18" height="10" fill="#8a8a8a"{attrs}/></svg>',
            "meaning": gettext(meaning),
        }
        for state, (attrs, meaning) in RUN_STATES.items()
    ]


def context(window: str, using: str, warning: float, app_path: str | None = None) -> dict[str, Any]:
    """Everything the dashboard template shows for ``window`` (one of WINDOWS)."""
    app = celery_app(app_path)
    until = dt.datetime.now(dt.timezone.utc)
    since = until - dt.timedelta(seconds=WINDOWS[window])
    runs = (
        TaskRun.objects.using(using).filter(started_at__gt=since)
        .order_by("-started_at")[:TIMELINE_RUNS]
    )  # fmt: skip
    shown = list(reversed(list(runs)))
    # the axis starts at the first run shown (with a margin), not at an empty window start
    start = since
    if shown:
        first = min(run.started_at for run in shown)
        start = max(since, first - max(dt.timedelta(seconds=2), (until - first) / 20))
    zone = timezone.get_current_timezone()
    svg, legend = timeline_svg(shown, start, until, tz=zone)
    view = replicas(app)
    scheduled = schedule_view(app)
    return {
        "zone": zone_name(zone),
        "on_time": ON_TIME,
        "states": state_legend(),
        "window": window,
        "windows": list(WINDOWS),
        "since": since,
        "until": until,
        "replica_error": view.error,
        "replicas": view.replicas,
        "masters": view.masters,
        "store": view.store,
        "entries": entry_rows(app, since, until, using, scheduled),
        "tasks": task_rows(app, since, using, warning),
        "schedules": schedule_rows(app, scheduled, using),
        "schedule_error": scheduled.error,
        "timeline": svg,
        "legend": sorted(legend.items()),
        "ttl_warning": warning,
    }

"""Schedule entries at runtime, for any project: kept in the slot store, seen by every
replica within two seconds (with ``"runtime"`` among ``singleton_beat_schedule_source``).

::

    from celery_singleton_beat import schedule

    schedule.add(app, "report", "reports.build", every=60, args=[7])
    schedule.add(app, "nightly", "reports.nightly", cron="30 2 * * *", timezone="Europe/Berlin")
    schedule.pause(app, "report", by="ops")  # nothing is sent while paused (any source)
    schedule.resume(app, "report")         # missed slots follow the misfire policy
    schedule.run_now(app, "nightly")       # one extra run, once, however many clicks race
    schedule.run_requests(app)             # the runs asked for, pending or sent
    schedule.remove(app, "report")

A run now is an extra slot of its own (entry ``{name}@run-now:{id}``), one and a half
seconds after the request, so that every replica has seen it when it falls due; its fence
makes it run once. While one is pending for an entry, another request returns its id.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import secrets
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celery.schedules import crontab

from celery_singleton_beat import sources
from celery_singleton_beat.core.entries import OPTION, Entry, Plan
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.runtime import load_task_modules
from celery_singleton_beat.sources.schedule_document import (
    POLICY_FIELDS,
    RUN_NOW_KEPT_MS,
    RunMarks,
    ScheduleDocument,
    to_beat,
)

if TYPE_CHECKING:
    from celery import Celery

#: A run now falls due this long after it was asked for (ms).
RUN_NOW_DELAY_MS = 1500
#: A run now not known sent this long after its time is not pending any more (ms).
RUN_NOW_PENDING_MS = 10_000
#: How long one master may take to answer an API call (s).
API_TIMEOUT = 0.5


@contextmanager
def _store(app: Celery) -> Iterator[ScheduleDocument]:
    store = ScheduleDocument.for_app(app, API_TIMEOUT)
    try:
        yield store
    finally:
        store.close()


def add(app: Celery, name: str, task: str, *, paused: bool = False, **fields: Any) -> None:
    """Schedule ``task`` as entry ``name``: ``every`` (seconds) or ``cron`` ("m h dom mon
    dow", or a ``crontab``), and optionally ``args``, ``kwargs``, ``options`` and the
    per-entry settings ``timezone``, ``misfire``, ``start_time``, ``end_time``,
    ``jitter``, ``slot_kwarg``, ``pause_on_failure``; ``paused`` adds it paused.
    Refuses a name that is scheduled already (here, or by another source of
    ``singleton_beat_schedule_source``) and a task this app does not register, or
    arguments it does not take."""
    owner = _other_sources(app)[1].get(name)
    if owner is not None:
        raise ConfigurationError(
            "name", name, f"a name no other schedule source gives ({name!r} is an entry of "
            f"{owner!r}: change it there, or choose another name)",
        )  # fmt: skip
    spec = spec_for(app, name, {"task": task, **fields})

    def change(doc: dict[str, Any]) -> None:
        if name in doc["entries"]:
            raise ConfigurationError(
                "name", name, "a name not scheduled yet (remove it first, or change it with "
                "celery_singleton_beat.schedule.update)",
            )  # fmt: skip
        doc["entries"][name] = spec
        if paused:
            doc["paused"][name] = {"by": "", "at": round(time.time() * 1000)}

    with _store(app) as store:
        store.edit(change)


def update(app: Celery, name: str, **fields: Any) -> None:
    """Change some fields of entry ``name`` (those of :func:`add`)."""

    def change(doc: dict[str, Any]) -> None:
        current = _existing(doc, name)
        merged = {**current, **fields}
        if "every" in fields:
            merged.pop("cron", None)
        if "cron" in fields:
            merged.pop("every", None)
        doc["entries"][name] = spec_for(app, name, merged)

    with _store(app) as store:
        store.edit(change)


def remove(app: Celery, name: str) -> None:
    """Stop scheduling entry ``name``."""

    def change(doc: dict[str, Any]) -> None:
        _existing(doc, name)
        del doc["entries"][name]
        doc["paused"].pop(name, None)
        doc.get("failures", {}).pop(name, None)

    with _store(app) as store:
        store.edit(change)


def pause(app: Celery, name: str, by: str = "") -> None:
    """Send nothing for entry ``name`` (of any source) until it is resumed; ``by`` says
    who paused it. Refuses a name no source gives."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError("name", name, "the name of a scheduled entry")
    _specs, others = _other_sources(app)

    def change(doc: dict[str, Any]) -> None:
        _known(name, doc, others)
        doc["paused"][name] = {"by": by, "at": round(time.time() * 1000)}

    with _store(app) as store:
        store.edit(change)


def resume(app: Celery, name: str) -> bool:
    """Send entry ``name`` again; the slots missed while paused follow its misfire policy,
    and its count of consecutive failed runs (``pause_on_failure``) starts again at 0.
    A paused name is resumed even if its source no longer gives it; any other name must be
    an entry of a source. Returns whether it was paused (an entry not paused is left as
    it is)."""
    _specs, others = _other_sources(app)

    def change(doc: dict[str, Any]) -> bool:
        doc.get("failures", {}).pop(name, None)  # pause_on_failure counts afresh
        if doc["paused"].pop(name, None) is None:
            _known(name, doc, others)
            return False
        return True

    with _store(app) as store:
        was_paused: bool = store.edit(change)
    return was_paused


def _other_sources(app: Celery) -> tuple[dict[str, sources.EntrySpec], dict[str, str]]:
    """The entries the app's schedule sources other than the runtime schedule give now,
    and the name of each one's source."""
    load_task_modules(app)  # with Django, this starts Django (its sources' models)
    specs, owners, _conflicts = sources.read_once(app, besides=sources.RUNTIME)
    return specs, owners


def _known(name: str, doc: dict[str, Any], others: Collection[str]) -> None:
    """Refuse ``name`` unless a source gives it (a runtime entry, or one of ``others``)."""
    known = set(others) | set(doc["entries"]) | set(doc["paused"])
    if name not in known:
        raise ConfigurationError(
            "name", name, f"the name of an entry of a schedule source, {_one_of(name, known)}"
        )


def _one_of(name: str, known: Collection[str], shown: int = 20) -> str:
    """``one of 'a', 'b'``, or with many names the closest ones and how many there are."""
    if len(known) <= shown:
        return "one of " + ", ".join(repr(n) for n in sorted(known)) if known else "none yet"
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
    return f"one of {len(known)} entries (schedule list, status){hint}"


def paused(app: Celery) -> dict[str, dict[str, Any]]:
    """The paused entry names, with who paused them (``by``), when (``at``, ms) and, when
    a policy paused them (``by`` is ``"pause_on_failure"``), why (``reason``)."""
    with _store(app) as store:
        _rev, doc = store.read()
    return dict(doc["paused"])


def run_now(app: Celery, name: str, by: str = "", message: Mapping[str, Any] | None = None) -> str:
    """One extra run of entry ``name``, sent once within two seconds; returns its id. While
    one is pending, returns that one's id.

    ``message`` (``task``, ``args``, ``kwargs``, ``options``) is what to send; without it
    the entry of that name says, whatever its source (a runtime entry, ``beat_schedule``,
    a django-celery-beat row ...). ``by`` says who asked."""
    others = _other_sources(app)[0] if message is None else {}
    with _store(app) as store:
        marks = RunMarks(store, 86400.0)
        now = round(time.time() * 1000)
        pending = _pending(store, marks, name, now)
        if pending is not None:
            return pending

        def change(doc: dict[str, Any]) -> str:
            asked = round(time.time() * 1000)  # under the edit lock: written right after
            again = _pending_in(doc, marks, name, asked)
            if again is not None:
                return again
            for run_id in [i for i, r in doc["runs"].items() if r["at"] < asked - RUN_NOW_KEPT_MS]:
                del doc["runs"][run_id]
            run_id = secrets.token_hex(6)
            spec = message if message is not None else _spec_of(app, doc, name, others)
            doc["runs"][run_id] = {
                **_message(name, spec), "entry": name, "at": asked + RUN_NOW_DELAY_MS,
                "by": by, "asked": asked,
            }  # fmt: skip
            return run_id

        result: str = store.edit(change)
        return result


def run_requests(app: Celery) -> list[dict[str, Any]]:
    """The runs asked for with :func:`run_now` in the last hour, oldest first.

    Each is a dict: ``id``, ``entry``, ``by`` (who asked), ``asked`` and ``at`` (when it
    falls due), both epoch ms, and ``state``: ``"pending"`` (not sent yet), ``"sent"`` (a
    replica sent it) or ``"overdue"`` (not sent within :data:`RUN_NOW_PENDING_MS` of its
    time: no replica was running then; another request makes a new run)."""
    with _store(app) as store:
        _rev, doc = store.read()
        now = round(time.time() * 1000)
        kept = {i: r for i, r in doc["runs"].items() if r["at"] > now - RUN_NOW_KEPT_MS}
        sent = RunMarks(store, 86400.0).sent(list(kept))
    found = []
    for run_id, run in sorted(kept.items(), key=lambda item: (item[1]["at"], item[0])):
        state = "sent" if run_id in sent else "pending"
        if state == "pending" and run["at"] <= now - RUN_NOW_PENDING_MS:
            state = "overdue"
        found.append({
            "id": run_id, "entry": run["entry"], "by": run.get("by", ""),
            "asked": run.get("asked", run["at"] - RUN_NOW_DELAY_MS), "at": run["at"],
            "state": state,
        })  # fmt: skip
    return found


def _pending(store: ScheduleDocument, marks: RunMarks, name: str, now: int) -> str | None:
    _rev, doc = store.read()
    return _pending_in(doc, marks, name, now)


def _pending_in(doc: dict[str, Any], marks: RunMarks, name: str, now: int) -> str | None:
    recent = [
        run_id
        for run_id, run in doc["runs"].items()
        if run["entry"] == name and run["at"] > now - RUN_NOW_PENDING_MS
    ]
    sent = marks.sent(recent)
    return next((run_id for run_id in recent if run_id not in sent), None)


def entries(app: Celery) -> dict[str, dict[str, Any]]:
    """The runtime entries by name, as stored (``every`` or ``cron``, ``paused`` ...)."""
    with _store(app) as store:
        _rev, doc = store.read()
    return dict(doc["entries"])


def _existing(doc: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in doc["entries"]:
        raise ConfigurationError(
            "name", name, f"the name of a runtime entry, {_one_of(name, doc['entries'])}"
        )
    spec: dict[str, Any] = doc["entries"][name]
    return spec


def _spec_of(
    app: Celery, doc: dict[str, Any], name: str, others: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any]:
    """Entry ``name`` of any source: a runtime entry, another source's (``others``), or
    one of ``beat_schedule`` (which a run now reaches even when no source reads it)."""
    beat_schedule = app.conf.beat_schedule or {}
    for found in (doc["entries"], others, beat_schedule):
        if name in found:
            spec: Mapping[str, Any] = found[name]
            return spec
    known = set(doc["entries"]) | set(others) | set(beat_schedule)
    raise ConfigurationError(
        "name", name, f"the name of an entry of a schedule source, {_one_of(name, known)}"
    )


def _message(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a run now of ``name`` sends: its task, arguments and options."""
    message = {
        "task": spec["task"],
        "args": list(spec.get("args") or ()),
        "kwargs": dict(spec.get("kwargs") or {}),
        "options": {k: v for k, v in (spec.get("options") or {}).items() if k != OPTION},
    }
    try:
        return dict(json.loads(json.dumps(message, default=_iso)))
    except TypeError as exc:
        raise ConfigurationError(
            f"the entry {name!r}", spec, f"arguments and options JSON can hold ({exc})"
        ) from None


def _iso(value: Any) -> str:
    """A datetime in a run now's message (an ``expires`` option) as ISO 8601 text."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def spec_for(app: Celery, name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A stored entry from :func:`add`'s arguments, checked as beat would check it."""
    known = {"task", "every", "cron", "args", "kwargs", "options", *POLICY_FIELDS}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigurationError(unknown[0], fields[unknown[0]], f"one of {sorted(known)}")
    spec = {k: v for k, v in fields.items() if v is not None}
    if ("every" in spec) == ("cron" in spec):
        raise ConfigurationError(
            "every/cron", (fields.get("every"), fields.get("cron")),
            "exactly one of every (seconds) and cron ('m h dom mon dow' or a crontab)",
        )  # fmt: skip
    if isinstance(spec.get("every"), dt.timedelta):
        spec["every"] = spec["every"].total_seconds()
    if isinstance(spec.get("cron"), crontab):
        spec["cron"] = _cron_text(spec["cron"])
    for bound in ("start_time", "end_time"):
        if isinstance(spec.get(bound), dt.datetime):
            spec[bound] = spec[bound].isoformat()
    spec.setdefault("args", [])
    spec.setdefault("kwargs", {})
    spec.setdefault("options", {})
    spec = dict(json.loads(json.dumps(spec)))  # what is stored is what beat will read
    try:
        Plan.build(Entry(name=name, app=app, **to_beat(spec)), app.timezone, 300.0)
    except ConfigurationError as exc:  # named by the argument given, not beat_schedule's path
        policy = f"beat_schedule[{name!r}]['options'][{OPTION!r}]["
        if not exc.name.startswith(policy):
            raise
        field = exc.name.removeprefix(policy).strip("'[]")
        raise ConfigurationError(field, exc.value, exc.accepted) from None
    given = {spec["slot_kwarg"]: "the slot's time"} if spec.get("slot_kwarg") else {}
    _registered(app, spec["task"], spec["args"], {**spec["kwargs"], **given})
    return spec


def _registered(app: Celery, task: Any, args: Any, kwargs: Any) -> None:
    """Refuse a task this app does not register once its task modules are imported (beat
    would send it; workers that do not register it either would discard it), and
    arguments it does not take (Celery would refuse to send them, at every slot)."""
    load_task_modules(app)
    if task in app.tasks:
        found = app.tasks[task]
        try:
            if found.typing:  # as Task.apply_async checks them
                found.__header__(*args, **kwargs)
        except TypeError as exc:
            raise ConfigurationError(
                "args/kwargs", (args, kwargs), f"arguments task {task!r} takes ({exc})"
            ) from None
        return
    ours = [n for n in app.tasks if not n.startswith("celery.")]
    close = closest_task(task, ours) if isinstance(task, str) else None
    hint = (
        f"did you mean {close!r}?" if close else "check the name, and that its module is "
        "imported: imports, include or autodiscover_tasks"
    )  # fmt: skip
    raise ConfigurationError("task", task, f"the name of a task registered in this app ({hint})")


#: How alike the parts of two task names that differ must be for one to be the other misspelt.
CLOSE_TASK = 0.7


def closest_task(name: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` that task ``name`` most probably misspells, if any is close.

    Two names are compared on what follows the dotted parts they share: the module
    prefix of one app's tasks (``proj.tasks.``) would make any two of them look alike
    (``proj.tasks.nothing_like_it`` is not ``proj.tasks.greet``)."""
    best, score = None, CLOSE_TASK
    for candidate in sorted(names):
        ratio = difflib.SequenceMatcher(None, *_differing(name, candidate)).ratio()
        if ratio >= score and (best is None or ratio > score):
            best, score = candidate, ratio
    return best


def _differing(one: str, other: str) -> tuple[str, str]:
    """``one`` and ``other`` without the leading dotted parts they share."""
    a, b = one.split("."), other.split(".")
    shared = 0
    while shared < min(len(a), len(b)) - 1 and a[shared] == b[shared]:
        shared += 1
    return ".".join(a[shared:]), ".".join(b[shared:])


def _cron_text(cron: crontab) -> str:
    """``crontab`` back to "m h dom mon dow" (through its pickling arguments, public)."""
    minute, hour, day_of_week, day_of_month, month_of_year = cron.__reduce__()[1]
    fields = (minute, hour, day_of_month, month_of_year, day_of_week)
    return " ".join(_field(f) for f in fields)


def _field(value: Any) -> str:
    if isinstance(value, (set, frozenset, list, tuple, range)):
        return ",".join(str(v) for v in sorted(value))
    return str(value).replace(" ", "")

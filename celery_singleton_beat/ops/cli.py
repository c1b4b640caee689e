"""``celery -A proj singleton-beat …``: the cluster's state in one command, for operators.

Registered in Celery's ``celery.commands`` entry point group. Expected failures (a bad
setting, no majority of masters, an unknown entry) end with a one-line error and a
non-zero exit code, never a traceback; passwords are never printed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import redis
from celery.schedules import crontab

from celery_singleton_beat.core.entries import Plan
from celery_singleton_beat.core.schema import LOCK_KINDS
from celery_singleton_beat.core.slots import slot_label
from celery_singleton_beat.errors import (
    ConfigurationError,
    LockError,
    SchemaError,
    StoreUnavailable,
)
from celery_singleton_beat.ops import cluster as overview
from celery_singleton_beat.ops.lock_stores import LockStore, lock_stores
from celery_singleton_beat.runtime import Runtime, load_task_modules, modules_failed
from celery_singleton_beat.settings.config import Config, TaskConfig, store_reason
from celery_singleton_beat.sources.schedule_document import ScheduleDocument
from celery_singleton_beat.tasks import copies

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

# Every `celery` command loads this module (the package's celery.commands entry point):
# a `celery worker` of an app that uses the library drops second copies of beat slots,
# whatever its tasks import
copies.connect()


def _config(ctx: click.Context) -> tuple[Celery, Config]:
    app = ctx.obj.app
    try:
        return app, Config.from_conf(app.conf)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@click.group(name="singleton-beat")
@click.pass_context
def singleton_beat(ctx: click.Context) -> None:
    """Inspect and operate celery-singleton-beat: replicas, masters, entries, locks."""
    prepare(ctx.obj.app, reported=ctx.invoked_subcommand == "check")


def prepare(app: Celery, reported: bool = False) -> None:
    """The app as beat and workers see it, before any command runs: its task modules
    imported, which sets Django up in a Django project (the database store,
    django-celery-beat's rows and the Django app's records are read through its models).

    When they cannot be imported (a module missing, a Django setting refused while Django
    starts), the command ends with that one line, as ``celery beat`` would refuse to
    start; ``check`` (``reported``) lists it among its findings instead."""
    failed = load_task_modules(app, log=False)
    if failed is not None and not reported:
        raise click.ClickException(modules_failed(failed))


@singleton_beat.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Replicas, masters (or the database store) and entries. Exit 0 healthy, 1 degraded,
    2 no quorum (the store does not answer)."""
    app, config = _config(ctx)
    data, code = _status(app, config)
    _emit(data, as_json, _status_text(data))
    ctx.exit(code)


#: Seconds one server may take to answer a status command.
STATUS_TIMEOUT = 0.5


def _status(app: Celery, config: Config) -> tuple[dict[str, Any], int]:
    """``status`` on any slot store: the replicas and the entries' counts read through the
    store, and each Redis server it runs on probed (none for the database store). What
    the store did not answer is shown unknown (JSON null), never as none or 0."""
    try:
        store = Runtime.of(app).open_store(STATUS_TIMEOUT)
    except (ConfigurationError, SchemaError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    masters = overview.master_states(store.servers(), STATUS_TIMEOUT)
    code = overview.health(masters)
    problems = [f"{m.name} is unreachable ({m.error})" for m in masters if not m.reachable]
    specs, sources, unread = _scheduled(app, config)
    try:
        live: list[dict[str, Any]] = store.replicas()
        pauses = ScheduleDocument(store).read()[1]["paused"]
        entries = _entries(app, config, (specs, sources), store.entry_counts, pauses)
    except StoreUnavailable as exc:
        live, entries = [], _entries(app, config, (specs, sources), None, None)
        problems.append(str(exc))
        code = overview.NO_QUORUM
    finally:
        store.close()
    problems += [
        f"the schedule source {name!r} could not be read ({why}): its entries are not listed"
        for name, why in unread.items()
        if name != "control"  # the store's pauses: the store's problem is listed
    ]
    if code != overview.NO_QUORUM and not live:
        problems.append("no live beat replica: nothing is being scheduled")
        code = max(code, overview.DEGRADED)
    data = {
        "health": _health_word(code, masters),
        "problems": problems,
        "store": store.describe(),
        "masters": [vars(m) for m in masters],
        "replicas": live,
        "entries": entries,
    }
    return data, code


def _health_word(code: int, masters: list[overview.MasterState]) -> str:
    """What ``code`` means on this store: no quorum of masters, or a store that does not
    answer (a database down has no quorum to lose)."""
    if code == overview.NO_QUORUM:
        return "no quorum" if masters else "store unavailable"
    return "healthy" if code == overview.HEALTHY else "degraded"


def _scheduled(
    app: Celery, config: Config
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The entries of every schedule source, the source of each, and the sources that
    could not be read (with why)."""
    try:
        return overview.entries_read(app, config)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


Scheduled = tuple[dict[str, Any], dict[str, str]]


def _entries(
    app: Celery,
    config: Config,
    scheduled: Scheduled,
    counts_of: Callable[[str], dict[str, int]] | None,
    pauses: dict[str, dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Each entry's row; ``counts_of`` and ``pauses`` None: the store did not answer, so
    its progress (and whether someone paused it) is unknown."""
    rows: list[dict[str, Any]] = []
    now = int(time.time() * 1000)
    specs, sources = scheduled
    for name, spec in sorted(specs.items()):
        try:
            plan = overview.plan_of(app, name, spec, config.misfire_grace)
        except (ConfigurationError, TypeError, ValueError) as exc:
            rows.append({"name": name, "source": sources[name], "error": str(exc)})
            continue
        counts = counts_of(name) if counts_of is not None else {}
        known = counts_of is not None
        last = counts.get("last")
        handled = counts.get("dispatched", 0) + counts.get("skipped", 0)
        paused: bool | None = plan.policy.paused
        held = (pauses or {}).get(name, {})
        following = None if paused else plan.slots.next_after(max(last or 0, now))
        rows.append(
            {
                "name": name,
                "source": sources[name],
                "task": plan.entry.task,
                "schedule": overview.plan_in_words(plan, app.timezone),
                "paused": paused if paused or pauses is not None else None,
                "paused_by": held.get("by") if paused else None,
                "pause_reason": held.get("reason") if paused else None,
                "last_slot": slot_label(last) if last and handled else None,
                "next_slot": slot_label(following) if following else None,
                "dispatched": counts.get("dispatched", 0) if known else None,
                "skipped": counts.get("skipped", 0) if known else None,
            }
        )
    return rows


def _status_text(data: dict[str, Any]) -> str:
    lines = [f"cluster: {data['health']}"]
    lines += [f"  problem: {p}" for p in data["problems"]]
    lines += ["", f"store: {data['store']}"]
    if data["masters"]:
        lines += ["", "masters:"]
    for m in data["masters"]:
        detail = f"{m['latency_ms']} ms, Redis {m['version']}" if m["reachable"] else m["error"]
        lines.append(f"  {m['name']:<22} {'up' if m['reachable'] else 'DOWN':<5} {detail}")
    lines += ["", f"replicas ({len(data['replicas'])}):"]
    for r in data["replicas"]:
        seen = "?" if r.get("seen_ago") is None else f"{r['seen_ago']:.1f}s"
        loading = (
            f"; initialised {r['initialised']:,} of {r['entries']:,} entries"
            if "initialised" in r
            else ""
        )
        lines.append(
            f"  {r['host']}:{r['pid']:<8} {r['mode']:<7} {r['role']:<8} heartbeat {seen} ago"
            f"{loading}"
        )
    lines += ["", "entries:"]
    for e in data["entries"]:
        if "error" in e:
            lines.append(f"  {e['name']}: INVALID {e['error']} ({e['source']})")
            continue
        following = e["next_slot"] or "none"
        paused = "; paused" if e["paused"] else ""
        if e["paused"] and e.get("pause_reason"):
            paused = f"; paused by {e['paused_by']} ({e['pause_reason']})"
        if e["dispatched"] is None:
            lines.append(
                f"  {e['name']}: {e['schedule']}{paused}; next {following}; last slot, "
                f"dispatched and skipped unknown (the store did not answer) ({e['source']})"
            )
            continue
        last = e["last_slot"] or "none yet"
        lines.append(
            f"  {e['name']}: {e['schedule']}{paused}; last {last}, next {following}; "
            f"dispatched {e['dispatched']}, skipped {e['skipped']} ({e['source']})"
        )
    return "\n".join(lines)


@singleton_beat.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(sorted(LOCK_KINDS)),
    help="Only locks of this kind (repeatable).",
)
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="Show at most this many rows, then how many more (0: all). JSON lists all.",
)
@click.pass_context
def locks(ctx: click.Context, as_json: bool, kinds: tuple[str, ...], limit: int) -> None:
    """Locks held on every store (beat masters, task masters or backend): key, kind,
    holder, remaining TTL, fencing token, store; beat leader first, slot marks last."""
    held: list[dict[str, Any]] = []
    unread: list[str] = []
    stores = _stores(ctx)
    for store in stores:
        try:
            held += store.held()
        except LockError as exc:
            click.echo(f"{store.name}: {exc}", err=True)
            unread.append(store.name)
    if kinds:
        wanted = {LOCK_KINDS[k] for k in kinds}
        held = [lock for lock in held if lock["kind"] in wanted]
    order = list(LOCK_KINDS.values())
    held.sort(key=lambda lock: (order.index(lock["kind"]), lock["key"], lock["store"]))
    _emit(held, as_json, _locks_text(held, limit, unread, len(stores)))
    if unread:
        ctx.exit(2)


def _locks_text(held: list[dict[str, Any]], limit: int, unread: list[str], stores: int) -> str:
    """The table, and which stores could not be read: their locks are unknown, not none."""
    text = _locks_table(held, limit) if held else "no locks held"
    if not unread:
        return text
    missing = f"the locks of the {' and the '.join(unread)} could not be read"
    if held:
        return f"{text}\n{missing}"
    return f"{missing}; the other stores hold none" if len(unread) < stores else missing


def _lock_row(lock: dict[str, Any]) -> tuple[str, ...]:
    remaining, fence = lock["remaining"], lock["fence"]
    return (
        str(lock["key"]), str(lock["kind"]), str(lock["holder"]),
        "-" if remaining is None else f"{remaining:.3f}",
        "-" if fence is None else str(fence), str(lock["store"]),
    )  # fmt: skip


def _locks_table(held: list[dict[str, Any]], limit: int) -> str:
    shown = held[:limit] if limit else held
    header = ("key", "kind", "holder", "ttl s", "fence", "store")
    rows = [_lock_row(lock) for lock in shown]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {3, 4}
    lines = [
        "  ".join(
            (cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
            for i, cell in enumerate(row)
        ).rstrip()
        for row in [header, *rows]
    ]
    if len(held) > len(shown):
        lines.append(f"... {len(held) - len(shown)} more (--limit 0 shows all; --kind filters)")
    return "\n".join(lines)


def _stores(ctx: click.Context) -> list[LockStore]:
    try:
        return lock_stores(ctx.obj.app)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@singleton_beat.command()
@click.argument("key")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.pass_context
def unlock(ctx: click.Context, key: str, yes: bool) -> None:
    """Force-release lock KEY (as listed by ``locks``) on every store that holds it.

    Exit 0 when it was released somewhere, 1 when no store held it, 2 when a store
    could not be reached."""
    stores = _stores(ctx)
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(
                f"refusing to force-release {key!r} without --yes in a non-interactive run"
            )
        click.confirm(f"Force-release {key!r}? Its holder will not know", abort=True)
    released, failed = False, False
    for store in stores:
        try:
            done, text = store.force_release(key)
        except LockError as exc:
            click.echo(f"{store.name}: {exc}", err=True)
            failed = True
            continue
        if done:
            logger.warning("singleton-beat unlock: force-released %r on the %s", key, store.name)
        released = released or done
        click.echo(f"{store.name}: {text}")
    ctx.exit(2 if failed else 0 if released else 1)


@singleton_beat.command()
@click.argument("expr_or_entry")
@click.option(
    "--count",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many next times to show.",
)
@click.option("--tz", "zone", default=None, help="Timezone for the times (default: the app's).")
@click.pass_context
def describe(ctx: click.Context, expr_or_entry: str, count: int, zone: str | None) -> None:
    """A crontab expression or an entry (of any schedule source) in plain words, with its
    next COUNT times."""
    app = ctx.obj.app
    try:
        tz = ZoneInfo(zone) if zone else app.timezone
    except (ZoneInfoNotFoundError, ValueError):
        raise click.ClickException(
            f"--tz {zone!r} is not an IANA zone name such as 'Europe/Berlin'"
        ) from None
    now = dt.datetime.now(dt.timezone.utc)
    if len(expr_or_entry.split()) == CRON_FIELDS:
        schedule = _parse_cron(expr_or_entry)
        click.echo(overview.in_words(schedule))
        for moment in itertools.islice(overview.slot_times(schedule, "", tz, now), count):
            click.echo(f"  {moment.isoformat()}")
        return
    _app, config = _config(ctx)
    plan, source = _entry_plan(app, config, expr_or_entry)
    paused = ", paused" if plan.policy.paused else ""
    click.echo(f"entry {plan.name!r} runs task {plan.entry.task} (source {source}{paused})")
    click.echo(overview.plan_in_words(plan, app.timezone))
    slot: int | None = int(now.timestamp() * 1000)
    for _ in range(count):
        slot = plan.slots.next_after(slot) if slot is not None else None
        if slot is None:
            break
        click.echo(f"  {dt.datetime.fromtimestamp(slot / 1000, tz).isoformat()}")
    click.echo(f"claim TTL {config.claim_ttl}s, leader lease TTL {config.lease_ttl}s")
    _lock_ttl_and_runtime(app, plan.name, plan.entry.task)


CRON_FIELDS = 5


def _entry_plan(app: Celery, config: Config, name: str) -> tuple[Plan, str]:
    """Entry ``name`` of any schedule source as beat plans it, and its source's name."""
    specs, sources, unread = _scheduled(app, config)
    if name not in specs:
        known = sorted(specs)
        listed = ", ".join(known[:10]) + (
            f", ... {len(known) - 10} more" if len(known) > 10 else ""
        )
        unknown = "".join(
            f"; the source {n!r} could not be read ({why})" for n, why in unread.items()
        )
        raise click.ClickException(
            f"{name!r} is neither a scheduled entry ({listed or 'none'}) nor a crontab "
            f"expression of five fields, such as '*/15 9-17 * * mon-fri'{unknown}"
        )
    try:
        return overview.plan_of(app, name, specs[name], config.misfire_grace), sources[name]
    except (ConfigurationError, TypeError, ValueError) as exc:
        raise click.ClickException(f"entry {name!r} ({sources[name]}): {exc}") from None


def _parse_cron(text: str) -> crontab:
    minute, hour, day_of_month, month, day_of_week = text.split()
    try:
        return crontab(minute, hour, day_of_week, day_of_month, month)
    except ValueError as exc:
        raise click.ClickException(f"{text!r} is not a valid crontab expression: {exc}") from None


def _lock_ttl_and_runtime(app: Celery, name: str, task_name: str) -> None:
    """The task's lock TTL beside the longest runtime recorded for the entry, when known."""
    task = app.tasks.get(task_name)
    ttl = overview.lock_ttl(app, task)
    if task is None:
        click.echo(f"task {task_name} is not registered here: its lock TTL is unknown")
    elif not hasattr(task, "singleton_ttl"):
        click.echo(f"task {task_name} takes no lock (not a SingletonTask)")
    else:
        click.echo(f"lock TTL {ttl:g}s" if ttl is not None else "lock TTL unknown (bad settings)")
    longest = overview.longest_runtime(name)
    if longest is None:
        recorded = (
            "none recorded yet"
            if overview.RUNTIME_SOURCES
            else "unknown (the Django app records runs)"
        )
        click.echo(f"longest recorded runtime: {recorded}")
        return
    click.echo(f"longest recorded runtime {longest:.3f}s")
    if ttl is not None and longest >= 0.8 * ttl:
        click.echo(
            f"warning: runs reach {longest / ttl:.0%} of the lock TTL; raise singleton_ttl",
            err=True,
        )


@singleton_beat.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Audit settings, masters and entries, reporting every problem at once: exit 1 when
    anything would break the guarantees (ERROR lines), 0 otherwise (WARN lines included)."""
    app = ctx.obj.app
    findings: list[tuple[str, str]] = []
    errors, config = Config.audited(app.conf)
    findings += [("ERROR", str(exc)) for exc in errors]
    findings += _check_task_settings(app, {str(exc) for exc in errors})
    findings += _check_scheduler_setting(app)
    failed = load_task_modules(app)
    if failed is not None:
        findings += [
            ("ERROR", modules_failed(failed)),
            ("WARN", "the store, the schedule sources and their entries are not checked "
                     "until the app's task modules import"),
        ]  # fmt: skip
    elif config is not None:
        if errors:  # audit on, with each refused setting at its default
            Runtime.of(app).assume(config)
        findings += _check_store(app, config, valid=not errors)
        findings += _check_sources(app, config, {text for _level, text in findings})
    else:  # no store to check: the entries of beat_schedule, at least
        findings.append(
            ("WARN", "the store, its masters and the schedule sources other than "
                     "beat_schedule are not checked until the store's settings are valid")
        )  # fmt: skip
        findings += _check_entries(app, Config.misfire_grace, dict(app.conf.beat_schedule or {}))
    for level, text in findings:
        click.echo(f"{level:<5} {text}")
    ctx.exit(1 if any(level == "ERROR" for level, _ in findings) else 0)


def _check_task_settings(app: Celery, reported: set[str]) -> list[tuple[str, str]]:
    """The singleton task settings (``singleton_beat_task_*``), checked as workers will."""
    try:
        TaskConfig.from_conf(app.conf)
    except ConfigurationError as exc:
        return [] if str(exc) in reported else [("ERROR", str(exc))]
    return []


def _check_scheduler_setting(app: Celery) -> list[tuple[str, str]]:
    """``beat_scheduler`` names this library's scheduler (or a subclass)."""
    from celery.utils.imports import symbol_by_name  # noqa: PLC0415

    from celery_singleton_beat.beat.scheduler import Scheduler  # noqa: PLC0415  (check alone)

    chosen = app.conf.beat_scheduler
    try:
        found = Scheduler if chosen == "singleton" else symbol_by_name(chosen)
    except Exception as exc:  # whatever importing it raises (Django not set up …)
        return [("ERROR", f"beat_scheduler = {chosen!r} cannot be imported ({exc})")]
    if isinstance(found, type) and issubclass(found, Scheduler):
        return [("OK", f"beat_scheduler = {chosen!r}")]
    return [
        ("WARN", f"beat_scheduler = {chosen!r}: `celery beat` runs that scheduler, with no "
                 f"fences, on every replica (each slot sent once per replica) unless started "
                 f"with `-S singleton`; set beat_scheduler = 'celery_singleton_beat.Scheduler'")
    ]  # fmt: skip


def _check_store(app: Celery, config: Config, valid: bool = True) -> list[tuple[str, str]]:
    """Where beat keeps its state: what the slot store says of itself (the database store:
    it answers, its tables are migrated), and each Redis server it runs on. With settings
    not ``valid``, checked with each refused one at its default."""
    try:
        store = Runtime.of(app).open_store()
    except (ConfigurationError, SchemaError, ImportError) as exc:
        return [("ERROR", str(exc))]
    try:
        servers = store.servers()
        if not servers:
            reason = store_reason(app.conf)
            return [
                _settings_line(f"slot store {config.store!r}, mode {config.mode}", valid),
                *([] if reason is None else [("OK", reason)]),
                *store.check(),
            ]
    finally:
        store.close()
    count = len(servers)
    return [
        _settings_line(f"{count} master{'s' if count != 1 else ''}, mode {config.mode}", valid),
        *_check_master_count(config),
        *_check_masters(config),
    ]


def _settings_line(store: str, valid: bool) -> tuple[str, str]:
    if valid:
        return ("OK", f"settings valid ({store})")
    return ("WARN", f"the rest is checked with each refused setting at its default ({store})")


def _check_sources(app: Celery, config: Config, reported: set[str]) -> list[tuple[str, str]]:
    """The schedule sources ``singleton_beat_schedule_source`` names can be read; each
    entry they give is valid and sends a task of this app; no name is given twice. A
    failure ``reported`` already (the store's, which the runtime source reads) is not
    repeated."""
    from celery_singleton_beat.sources import read_each  # noqa: PLC0415  (layer 2)

    try:
        specs, owners, conflicts, unread = read_each(app, config.schedule_source)
    except ConfigurationError as exc:
        return [("ERROR", str(exc))]
    except Exception as exc:  # a source that cannot start (its tables missing …)
        if str(exc) in reported:
            return []
        return [("ERROR", f"the schedule sources cannot be read: {type(exc).__name__}: {exc}")]
    names = ", ".join(dict.fromkeys(sorted(owners.values()))) or "none"
    return [
        *[
            ("WARN", f"the schedule source {name!r} is not read: the error above stops it")
            if why in reported
            else ("ERROR", why)
            for name, why in unread.items()
        ],
        ("OK", f"schedule sources read: {len(specs)} entries (from {names})"),
        *_check_entries(app, config.misfire_grace, specs, owners),
        *[("ERROR", str(conflict)) for conflict in conflicts],
    ]


def _check_master_count(config: Config) -> list[tuple[str, str]]:
    members = config.members()
    count = len(members)
    if count == 1 and members[0].sentinel is not None:
        return [
            ("OK", f"one Sentinel-managed primary ({members[0].name}): beat follows its "
                   f"failover, and a write counts once its replicas acknowledged it "
                   f"(singleton_beat_redis_min_replicas = {config.redis_min_replicas!r})")
        ]  # fmt: skip
    if count == 1 and members[0].cluster:
        return [
            ("OK", f"one Redis Cluster ({members[0].name}): beat follows each primary's "
                   f"failover, and a write counts once its shard's replicas acknowledged it "
                   f"(singleton_beat_redis_min_replicas = {config.redis_min_replicas!r})")
        ]  # fmt: skip
    if count == 1:
        return [("WARN", "one master: losing it stops beat; list three independent masters")]
    if count % 2 == 0:
        survives = (count - 1) // 2
        return [
            ("WARN", f"{count} masters: a majority is {count // 2 + 1}, so they survive "
                     f"{survives} failure{'s' if survives != 1 else ''}, no more than "
                     f"{count - 1} would; use an odd number (3 or 5)")
        ]  # fmt: skip
    return []


def _check_masters(config: Config) -> list[tuple[str, str]]:
    findings = []
    found = overview.masters(config)
    servers: dict[str, list[str]] = {}
    for state, client in found:
        if not state.reachable or client is None:
            findings.append(("ERROR", f"{state.name}: unreachable ({state.error})"))
            continue
        servers.setdefault(state.run_id or state.name, []).append(state.name)
        try:
            findings += overview.cluster_findings(state.name, client)
            findings += _check_master(config, state.name, client)
        except redis.RedisError as exc:
            findings.append(("ERROR", f"{state.name}: {type(exc).__name__}: {exc}"))
    for run_id, names in servers.items():
        if len(names) > 1:
            findings.append(
                ("ERROR", f"{' and '.join(names)} are one Redis server (run_id {run_id}): "
                          f"it would cast {len(names)} votes; list each master once")
            )  # fmt: skip
    if overview.health([s for s, _ in found]) == overview.NO_QUORUM:
        findings.append(("ERROR", "no majority of masters answers: nothing will be published"))
    findings.append(("OK", "lock connections use no redis-py retries (the majority decides)"))
    return findings


def _check_master(config: Config, name: str, client: Any) -> list[tuple[str, str]]:
    findings = []
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "?")
        appendonly = client.config_get("appendonly").get("appendonly")
    except redis.ResponseError as exc:
        findings.append(
            ("WARN", f"{name}: CONFIG is not available ({exc}; renamed or disabled, as on "
                     f"managed Redis): maxmemory-policy and persistence cannot be checked; "
                     f"make sure with your provider that maxmemory-policy is noeviction")
        )  # fmt: skip
        policy = appendonly = None
    if policy == "noeviction":
        findings.append(("OK", f"{name}: maxmemory-policy noeviction"))
    elif policy is not None:
        findings.append(
            ("ERROR", f"{name}: maxmemory-policy {policy} can evict lock and fence keys; "
                      f"set maxmemory-policy noeviction")
        )  # fmt: skip
    if policy is not None and appendonly != "yes":
        findings.append(
            ("WARN", f"{name}: no AOF persistence; after it restarts empty, keep it out for "
                     f"the longest lock TTL in use (delayed restart), see docs/locks.md")
        )  # fmt: skip
    seconds, micros = overview.server_time(client)
    offset = seconds + micros / 1e6 - time.time()
    level = "OK" if abs(offset) < 0.5 else "ERROR" if abs(offset) >= config.claim_ttl else "WARN"
    findings.append((level, f"{name}: clock offset from this host {offset * 1000:+.0f} ms"))
    return findings


def _check_entries(
    app: Celery,
    grace: float,
    specs: Mapping[str, Mapping[str, Any]],
    owners: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Each entry, of any source, as beat plans it: its schedule valid, its task
    registered in this app."""
    findings = []
    for name, spec in sorted(specs.items()):
        source = f" ({owners[name]})" if owners and owners[name] != "beat_schedule" else ""
        try:
            plan = overview.plan_of(app, name, spec, grace)
        except (ConfigurationError, TypeError, ValueError) as exc:
            findings.append(("ERROR", f"entry {name!r}{source}: {exc}"))
            continue
        if plan.entry.task not in app.tasks:
            findings.append(
                ("ERROR", f"entry {name!r}{source}: task {plan.entry.task!r} is not registered "
                          f"in this app; workers would discard its messages (check the name, "
                          f"and that its module is imported: imports, include or "
                          f"autodiscover_tasks)")
            )  # fmt: skip
        else:
            words = overview.plan_in_words(plan, app.timezone)
            findings.append(("OK", f"entry {name!r}{source}: {words}"))
    return findings


def _add_schedule_commands() -> None:
    from celery_singleton_beat.ops.db_cli import db  # noqa: PLC0415
    from celery_singleton_beat.ops.schedule_cli import schedule  # noqa: PLC0415

    singleton_beat.add_command(schedule)
    singleton_beat.add_command(db)


_add_schedule_commands()

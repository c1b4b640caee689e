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
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from celery.schedules import crontab

from celery_singleton_beat import overview
from celery_singleton_beat.config import Config
from celery_singleton_beat.entries import Plan
from celery_singleton_beat.errors import ConfigurationError, LockError
from celery_singleton_beat.lock_stores import LockStore, lock_stores
from celery_singleton_beat.slots import slot_label

logger = logging.getLogger(__name__)


def _config(ctx: click.Context) -> tuple[Any, Config]:
    app = ctx.obj.app
    try:
        return app, Config.from_conf(app.conf)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@click.group(name="singleton-beat")
def singleton_beat() -> None:
    """Inspect and operate celery-singleton-beat: replicas, masters, entries, locks."""


@singleton_beat.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Replicas, masters and entries. Exit 0 healthy, 1 degraded, 2 no quorum."""
    app, config = _config(ctx)
    found = overview.masters(config)
    states = [s for s, _ in found]
    clients = [c for s, c in found if s.reachable]
    code = overview.health(states)
    data = {
        "health": ["healthy", "degraded", "no quorum"][code],
        "masters": [vars(s) for s in states],
        "replicas": overview.replicas(config, clients),
        "entries": _entries(app, config, clients),
    }
    _emit(data, as_json, _status_text(data))
    ctx.exit(code)


def _entries(app: Any, config: Config, clients: list[Any]) -> list[dict[str, Any]]:
    rows = []
    now = int(time.time() * 1000)
    beat = app.conf.beat_schedule or {}
    for name in sorted(beat):
        try:
            entry = overview.beat_entry(app, name)
            plan = Plan.build(entry, app.timezone, config.misfire_grace)
        except (ConfigurationError, TypeError, ValueError) as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        counts = overview.entry_counts(config, clients, name)
        last = counts.get("last")
        handled = counts.get("dispatched", 0) + counts.get("skipped", 0)
        following = plan.slots.next_after(max(last or 0, now))
        rows.append(
            {
                "name": name,
                "task": entry.task,
                "schedule": overview.in_words(entry.schedule),
                "last_slot": slot_label(last) if last and handled else None,
                "next_slot": slot_label(following) if following else None,
                "dispatched": counts.get("dispatched", 0),
                "skipped": counts.get("skipped", 0),
            }
        )
    return rows


def _status_text(data: dict[str, Any]) -> str:
    lines = [f"cluster: {data['health']}", "", "masters:"]
    for m in data["masters"]:
        detail = f"{m['latency_ms']} ms, Redis {m['version']}" if m["reachable"] else m["error"]
        lines.append(f"  {m['name']:<22} {'up' if m['reachable'] else 'DOWN':<5} {detail}")
    lines += ["", f"replicas ({len(data['replicas'])}):"]
    for r in data["replicas"]:
        seen = "?" if r["seen_ago"] is None else f"{r['seen_ago']:.1f}s"
        lines.append(
            f"  {r['host']}:{r['pid']:<8} {r['mode']:<7} {r['role']:<8} heartbeat {seen} ago"
        )
    lines += ["", "entries:"]
    for e in data["entries"]:
        if "error" in e:
            lines.append(f"  {e['name']}: INVALID {e['error']}")
            continue
        lines.append(
            f"  {e['name']}: {e['schedule']}; last {e['last_slot']}, next {e['next_slot']}; "
            f"dispatched {e['dispatched']}, skipped {e['skipped']}"
        )
    return "\n".join(lines)


@singleton_beat.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.pass_context
def locks(ctx: click.Context, as_json: bool) -> None:
    """Locks held on every store (beat masters, task masters or backend): key, holder,
    remaining TTL, fencing token, store."""
    held: list[dict[str, Any]] = []
    failed = False
    for store in _stores(ctx):
        try:
            held += store.held()
        except LockError as exc:
            click.echo(f"{store.name}: {exc}", err=True)
            failed = True
    lines = [f"{'key':<48} {'kind':<12} {'holder':<28} {'ttl s':>8} {'fence':>6}  store"]
    for lock in held:
        lines.append(
            f"{lock['key']:<48} {lock['kind']:<12} {lock['holder']:<28} "
            f"{lock['remaining'] if lock['remaining'] is not None else '-':>8} "
            f"{lock['fence'] if lock['fence'] is not None else '-':>6}  {lock['store']}"
        )
    _emit(held, as_json, "\n".join(lines) if held else "no locks held")
    if failed:
        ctx.exit(2)


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
@click.option("--count", default=5, show_default=True, help="How many next times to show.")
@click.option("--tz", "zone", default=None, help="Timezone for the times (default: the app's).")
@click.pass_context
def describe(ctx: click.Context, expr_or_entry: str, count: int, zone: str | None) -> None:
    """A crontab expression or an entry in plain words, with its next COUNT times."""
    app = ctx.obj.app
    try:
        tz = ZoneInfo(zone) if zone else app.timezone
    except (ZoneInfoNotFoundError, ValueError):
        raise click.ClickException(
            f"--tz {zone!r} is not an IANA zone name such as 'Europe/Berlin'"
        ) from None
    beat = app.conf.beat_schedule or {}
    if expr_or_entry in beat:
        schedule, task = _entry_schedule(app, expr_or_entry)
        click.echo(f"entry {expr_or_entry!r} runs task {task}")
    else:
        schedule = _parse_cron(expr_or_entry, beat)
    click.echo(overview.in_words(schedule))
    now = dt.datetime.now(dt.timezone.utc)
    for moment in itertools.islice(overview.slot_times(schedule, expr_or_entry, tz, now), count):
        click.echo(f"  {moment.isoformat()}")
    if expr_or_entry in beat:
        _config_ttls(ctx)
        _lock_ttl_and_runtime(app, expr_or_entry, task)


def _entry_schedule(app: Any, name: str) -> tuple[Any, str]:
    entry = overview.beat_entry(app, name)
    return entry.schedule, entry.task


def _parse_cron(text: str, beat: dict[str, Any]) -> crontab:
    fields = text.split()
    if len(fields) != 5:
        known = ", ".join(sorted(beat)) or "none"
        raise click.ClickException(
            f"{text!r} is neither an entry of beat_schedule ({known}) nor a crontab "
            f"expression of five fields, such as '*/15 9-17 * * mon-fri'"
        )
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(minute, hour, day_of_week, day_of_month, month)
    except ValueError as exc:
        raise click.ClickException(f"{text!r} is not a valid crontab expression: {exc}") from None


def _lock_ttl_and_runtime(app: Any, name: str, task_name: str) -> None:
    """The task's lock TTL beside the longest runtime recorded for the entry, when known."""
    overview.load_task_modules(app)  # lets the Django app start and register its records
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
        click.echo("longest recorded runtime: unknown (the Django app records runs)")
        return
    click.echo(f"longest recorded runtime {longest:.3f}s")
    if ttl is not None and longest >= 0.8 * ttl:
        click.echo(
            f"warning: runs reach {longest / ttl:.0%} of the lock TTL; raise singleton_ttl",
            err=True,
        )


def _config_ttls(ctx: click.Context) -> None:
    _app, config = _config(ctx)
    click.echo(f"claim TTL {config.claim_ttl}s, leader lease TTL {config.lease_ttl}s")


@singleton_beat.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Audit settings and masters: exit 1 when anything would break the guarantees."""
    app = ctx.obj.app
    findings: list[tuple[str, str]] = []
    try:
        config = Config.from_conf(app.conf)
    except ConfigurationError as exc:
        findings.append(("ERROR", str(exc)))
    else:
        findings.append(
            ("OK", f"settings valid ({len(config.redis_urls)} masters, mode {config.mode})")
        )
        findings += _check_masters(config)
        findings += _check_entries(app, config)
    for level, text in findings:
        click.echo(f"{level:<5} {text}")
    ctx.exit(1 if any(level == "ERROR" for level, _ in findings) else 0)


def _check_masters(config: Config) -> list[tuple[str, str]]:
    findings = []
    found = overview.masters(config)
    for state, client in found:
        if not state.reachable:
            findings.append(("ERROR", f"{state.name}: unreachable ({state.error})"))
            continue
        findings += _check_master(config, state.name, client)
    if overview.health([s for s, _ in found]) == overview.NO_QUORUM:
        findings.append(("ERROR", "no majority of masters answers: nothing will be published"))
    findings.append(("OK", "lock connections use no redis-py retries (the majority decides)"))
    return findings


def _check_master(config: Config, name: str, client: Any) -> list[tuple[str, str]]:
    findings = []
    policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "?")
    if policy == "noeviction":
        findings.append(("OK", f"{name}: maxmemory-policy noeviction"))
    else:
        findings.append(
            ("ERROR", f"{name}: maxmemory-policy {policy} can evict lock and fence keys; "
                      f"set maxmemory-policy noeviction")
        )  # fmt: skip
    if client.config_get("appendonly").get("appendonly") != "yes":
        findings.append(
            ("WARN", f"{name}: no AOF persistence; after it restarts empty, keep it out for "
                     f"the longest lock TTL in use (delayed restart), see docs/locks.md")
        )  # fmt: skip
    seconds, micros = client.time()
    offset = seconds + micros / 1e6 - time.time()
    level = "OK" if abs(offset) < 0.5 else "ERROR" if abs(offset) >= config.claim_ttl else "WARN"
    findings.append((level, f"{name}: clock offset from this host {offset * 1000:+.0f} ms"))
    return findings


def _check_entries(app: Any, config: Config) -> list[tuple[str, str]]:
    findings = []
    for name in sorted(app.conf.beat_schedule or {}):
        try:
            entry = overview.beat_entry(app, name)
            Plan.build(entry, app.timezone, config.misfire_grace)
        except (ConfigurationError, TypeError, ValueError) as exc:
            findings.append(("ERROR", f"entry {name!r}: {exc}"))
        else:
            findings.append(("OK", f"entry {name!r}: {overview.in_words(entry.schedule)}"))
    return findings


def _add_schedule_commands() -> None:
    from celery_singleton_beat.cli_schedule import schedule  # noqa: PLC0415

    singleton_beat.add_command(schedule)


_add_schedule_commands()

"""``celery -A proj singleton-beat schedule …``: runtime entries from the command line.

The same operations as :mod:`celery_singleton_beat.schedule.api`; every replica reading the
``"runtime"`` source follows a change within two seconds.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import time
from collections.abc import Mapping
from typing import Any

import click

from celery_singleton_beat.errors import ConfigurationError, SingletonBeatError
from celery_singleton_beat.schedule import api, backfills


def _app(ctx: click.Context) -> Any:
    return ctx.obj.app


def _run(call: Any, *args: Any, options: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
    """Call the API; an expected failure ends with one line, never a traceback, naming
    the command's option for an API argument it refuses (``options``: argument -> option)."""
    try:
        return call(*args, **kwargs)
    except ConfigurationError as exc:
        if options and exc.name in options:
            exc = ConfigurationError(options[exc.name], exc.value, exc.accepted)
        raise click.ClickException(str(exc)) from None
    except SingletonBeatError as exc:
        raise click.ClickException(str(exc)) from None


def _json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc}") from None


@click.group(name="schedule")
def schedule() -> None:
    """Add, remove and list runtime entries; pause, resume, run now and backfill any entry."""


@schedule.command()
@click.argument("name")
@click.argument("task")
@click.option("--every", type=float, help="Seconds between two runs.")
@click.option("--cron", help="A crontab: 'm h dom mon dow'.")
@click.option("--timezone", help="IANA zone of the crontab (default: the app's).")
@click.option("--args", "args_json", help="Positional arguments as a JSON list.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--queue", help="The queue to send to.")
@click.option("--misfire", type=click.Choice(["coalesce", "skip"]), help="Missed slots.")
@click.option("--paused", is_flag=True, help="Add it paused.")
@click.option("--start-time", help="No run before it: ISO 8601 with an offset.")
@click.option("--end-time", help="No run at or after it: ISO 8601 with an offset.")
@click.option("--jitter", type=float, help="Send each run up to this many seconds late.")
@click.option("--slot-kwarg", help="Keyword argument that receives the slot's time.")
@click.option("--pause-on-failure", type=int, help="Pause after N consecutive failed runs.")
@click.pass_context
def add(ctx: click.Context, /, name: str, task: str, **given: Any) -> None:
    """Schedule TASK as entry NAME."""
    queue = given.pop("queue")
    _run(
        api.add, _app(ctx), name, task, every=given["every"], cron=given["cron"],
        timezone=given["timezone"], args=_json(given["args_json"], "--args"),
        kwargs=_json(given["kwargs_json"], "--kwargs"),
        options={"queue": queue} if queue else None, misfire=given["misfire"],
        paused=given["paused"], start_time=given["start_time"], end_time=given["end_time"],
        jitter=given["jitter"], slot_kwarg=given["slot_kwarg"],
        pause_on_failure=given["pause_on_failure"],
    )  # fmt: skip
    click.echo(f"added {name!r}")


@schedule.command()
@click.argument("name")
@click.pass_context
def pause(ctx: click.Context, name: str) -> None:
    """Send nothing for NAME (an entry of any source) until it is resumed."""
    _run(api.pause, _app(ctx), name, by=f"cli:{getpass.getuser()}")
    click.echo(f"paused {name!r}")


@schedule.command()
@click.argument("name")
@click.pass_context
def resume(ctx: click.Context, name: str) -> None:
    """Send NAME again (missed slots follow its misfire policy)."""
    if _run(api.resume, _app(ctx), name):
        click.echo(f"resumed {name!r}")
    else:
        click.echo(f"{name!r} is not paused: nothing to resume")


@schedule.command(name="run-now")
@click.argument("name")
@click.pass_context
def run_now(ctx: click.Context, name: str) -> None:
    """One extra run of NAME, sent once within two seconds."""
    run_id = _run(api.run_now, _app(ctx), name, by=f"cli:{getpass.getuser()}")
    click.echo(f"run now of {name!r}: {run_id}")


@schedule.command()
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Stop scheduling NAME."""
    _run(api.remove, _app(ctx), name)
    click.echo(f"removed {name!r}")


def _moment(value: str | None, what: str) -> dt.datetime:
    """ISO 8601 (``2026-12-07T05:00``, ``…Z``, ``…+01:00``; without an offset: the app's
    timezone); none: now."""
    if value is None:
        return dt.datetime.now(dt.timezone.utc)
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-12-07T05:00:00Z", param_hint=what
        ) from None


@schedule.command()
@click.argument("name")
@click.option("--from", "start", required=True, help="ISO 8601 start (inclusive).")
@click.option("--to", "end", help="ISO 8601 end (exclusive; default: now).")
@click.option("--rate", type=float, default=backfills.DEFAULT_RATE, show_default=True,
              help="Slots sent per second, by all replicas together.")  # fmt: skip
@click.option("--no-wait", is_flag=True, help="Ask for it and return; do not show progress.")
@click.pass_context
def backfill(ctx: click.Context, /, name: str, **given: Any) -> None:
    """Send once each slot of NAME from --from to --to that did not run (the replicas send
    them, paced); shows the progress until every slot is settled."""
    app = _app(ctx)
    backfill_id = _run(
        backfills.backfill, app, name, _moment(given["start"], "--from"),
        _moment(given["end"], "--to"), rate=given["rate"], by=f"cli:{getpass.getuser()}",
        options={"start": "--from", "end": "--to", "rate": "--rate"},
    )  # fmt: skip
    progress = _run(backfills.backfill_progress, app, backfill_id)
    click.echo(f"backfill {backfill_id} of {name!r}: {progress['total']} slot(s)")
    if progress["replicas"] == 0 and progress["state"] == "running":
        click.echo("warning: no beat replica is alive: the slots are sent once one runs", err=True)
    if given["no_wait"]:
        return
    with click.progressbar(length=progress["total"], label="settled") as bar:
        while progress["state"] == "running":
            time.sleep(0.5)
            settled = progress["settled"]
            progress = _run(backfills.backfill_progress, app, backfill_id)
            bar.update(progress["settled"] - settled)
    click.echo(
        f"{progress['state']}: {progress['sent']} sent, {progress['had_run']} had run, "
        f"{progress['total'] - progress['settled']} not settled"
    )
    if progress["state"] != "done":
        raise click.ClickException(
            "the backfill expired before every slot was settled: is a beat replica running?"
        )


@schedule.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.pass_context
def list_entries(ctx: click.Context, as_json: bool) -> None:
    """The runtime entries, and the paused names of any source."""
    found = _run(api.entries, _app(ctx))
    paused = _run(api.paused, _app(ctx))
    if as_json:
        click.echo(json.dumps({"entries": found, "paused": paused}, indent=2, sort_keys=True))
        return
    if not found and not paused:
        click.echo("no runtime entries, and nothing paused")
    for name, spec in sorted(found.items()):
        when = f"every {spec['every']}s" if "every" in spec else f"cron {spec['cron']!r}"
        state = " (paused)" if name in paused else ""
        click.echo(f"{name}: {spec['task']} {when}{state}")
    for name in sorted(set(paused) - set(found)):
        click.echo(f"{name}: (paused, by {paused[name].get('by') or 'unknown'})")

"""How a newly read schedule is sorted against the running plans (no servers)."""

from __future__ import annotations

import datetime as dt

from celery import Celery
from celery.schedules import crontab

from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.core.replan import compare

APP = Celery("replan", broker="memory://", set_as_current=False)
UTC = dt.timezone.utc


def plan(name: str, schedule: object, **options: object) -> Plan:
    entry = Entry(
        name=name, task="t", schedule=schedule, app=APP, options={"singleton_beat": options}
    )
    return Plan.build(entry, UTC, 300.0)


def test_a_new_read_sorts_entries_into_added_changed_resumed_removed_and_updated() -> None:
    running = {
        "same": plan("same", 10.0),
        "args": plan("args", 10.0),
        "faster": plan("faster", 10.0),
        "cron": plan("cron", crontab(minute=0)),
        "paused": plan("paused", 10.0, paused=True),
        "gone": plan("gone", 10.0),
    }
    running["args"].next_slot = 1234
    new_args = Entry(name="args", task="t", schedule=10.0, args=(1,), app=APP)
    built = {
        "same": plan("same", 10.0),
        "args": Plan.build(new_args, UTC, 300.0),
        "faster": plan("faster", 5.0),
        "cron": plan("cron", crontab(minute=0), timezone="Europe/Berlin"),
        "paused": plan("paused", 10.0),
        "new": plan("new", 1.0),
    }
    changes = compare(running, built)
    assert [p.name for p in changes.added] == ["new"]
    assert [p.name for p in changes.changed] == ["faster", "cron"]
    assert [p.name for p in changes.resumed] == ["paused"]
    assert changes.removed == ["gone"]
    assert changes.updated == 2  # new arguments; the pause lifted
    assert changes.plans["args"] is running["args"] and changes.plans["args"].next_slot == 1234
    assert changes.plans["args"].entry.args == (1,)
    assert sorted(changes.plans) == ["args", "cron", "faster", "new", "paused", "same"]


def test_reading_the_same_schedule_again_changes_nothing() -> None:
    running = {"same": plan("same", 10.0), "cron": plan("cron", crontab(minute=0))}
    built = {"same": plan("same", 10.0), "cron": plan("cron", crontab(minute=0))}
    changes = compare(running, built)
    assert not changes
    assert changes.plans == running

"""The warning of entries whose task this process does not register, at any schedule size:
one line per entry, or one line per task for entries that appear together."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from celery import Celery

from celery_singleton_beat.beat.unknown_tasks import CONSEQUENCE, UnknownTasks
from celery_singleton_beat.core.entries import Entry, Plan

UTC = dt.timezone.utc


def plans(app: Celery, names: list[str], task: str) -> list[Plan]:
    return [Plan.build(Entry(name=n, task=task, schedule=60.0, app=app), UTC, 300.0) for n in names]


def test_entries_of_one_unknown_task_appearing_together_are_warned_of_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Celery("unknown-tasks")

    @app.task(name="known")
    def known() -> None: ...

    unknown = UnknownTasks(app)
    many = [f"customer-{i:05d}" for i in range(10_000)]
    with caplog.at_level(logging.WARNING):
        unknown.warn(
            plans(app, many, "reports.nope") + plans(app, ["ghost"], "nope")
            + plans(app, ["fine"], "known")
        )  # fmt: skip
        unknown.warn(plans(app, [*many[:3], "ghost"], "reports.nope"))  # "ghost": a new task
        unknown.warn(plans(app, ["late"], "reports.nope"))

    assert caplog.messages == [
        "singleton beat: 10,000 entries ('customer-00000', 'customer-00001', 'customer-00002', "
        "'customer-00003', 'customer-00004' and 9,995 more) send task 'reports.nope', which is "
        f"not registered in this app: {CONSEQUENCE}",
        f"singleton beat: entry 'ghost' sends task 'nope', which is not registered in this app: "
        f"{CONSEQUENCE}",
        "singleton beat: entry 'ghost' sends task 'reports.nope', which is not registered in "
        f"this app: {CONSEQUENCE}",
        "singleton beat: entry 'late' sends task 'reports.nope', which is not registered in "
        f"this app: {CONSEQUENCE}",
    ]

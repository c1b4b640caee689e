"""The Django choices are the library's enumerations, value for value."""

from __future__ import annotations

from celery_singleton_beat.core.schema import Outcome, RunStatus
from django_celery_singleton_beat.models import SlotDispatch, TaskRun


def test_task_run_statuses_are_the_run_status_enum() -> None:
    assert TaskRun.Status.values == [s.value for s in RunStatus]


def test_slot_dispatch_outcomes_are_the_outcome_enum() -> None:
    assert SlotDispatch.Outcome.values == [o.value for o in Outcome]

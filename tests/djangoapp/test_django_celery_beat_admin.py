"""django-celery-beat's own admin works with the scheduler setting docs/django.md gives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings
from django.urls import reverse

pytest.importorskip("django_celery_beat")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "django.md"


def documented_scheduler() -> str:
    found = re.findall(r'^CELERY_BEAT_SCHEDULER = "([^"]+)"', PAGE.read_text(), re.M)
    assert found, "docs/django.md sets CELERY_BEAT_SCHEDULER"
    assert len(set(found)) == 1, found
    return str(found[0])


@pytest.mark.django_db
def test_the_periodic_task_list_opens_with_the_documented_scheduler_setting(
    admin_client: Any,
) -> None:
    with override_settings(CELERY_BEAT_SCHEDULER=documented_scheduler()):
        page = admin_client.get(reverse("admin:django_celery_beat_periodictask_changelist"))
    assert page.status_code == 200


def test_the_short_scheduler_name_beside_django_celery_beat_is_reported(settings: Any) -> None:
    settings.CELERY_BEAT_SCHEDULER = "singleton"
    found = [
        (str(m.msg), str(m.hint))
        for m in checks.run_checks(tags=[checks.Tags.compatibility])
        if m.id == "singleton_beat.W002"
    ]
    assert found == [
        (
            "CELERY_BEAT_SCHEDULER = 'singleton' makes django-celery-beat's admin fail: it "
            "imports the setting as a path, which the short name is not.",
            "Set CELERY_BEAT_SCHEDULER = 'celery_singleton_beat.Scheduler' (the same "
            "scheduler; `celery beat -S singleton` keeps working).",
        )
    ]
    settings.CELERY_BEAT_SCHEDULER = "celery_singleton_beat.Scheduler"
    assert [m for m in checks.run_checks() if m.id == "singleton_beat.W002"] == []

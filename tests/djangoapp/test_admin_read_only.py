"""The admin never deletes a record: not a run, not a slot decision, not a database lock
(deleting a lock row would force-release it); the dashboard needs the view permission on
task runs, not only staff status."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission, User
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from django_celery_singleton_beat.models import Lock, SlotDispatch, TaskRun

pytestmark = pytest.mark.django_db
NOW = dt.datetime.now(dt.timezone.utc)


def records() -> dict[str, Model]:
    return {
        "taskrun": TaskRun.objects.create(
            task_id="t1", task_name="billing.charge", status="success", node="w1@host",
            started_at=NOW - dt.timedelta(minutes=5),
        ),
        "slotdispatch": SlotDispatch.objects.create(
            entry="charge", slot=NOW.replace(microsecond=0), outcome="dispatched",
            replica="host:1", decided_at=NOW, publishes=1,
        ),
        "lock": Lock.objects.create(key="billing.charge", token="abc@host", expires_ms=1, fence=3),
    }  # fmt: skip


@pytest.fixture
def superuser(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


@pytest.mark.parametrize("model", ["taskrun", "slotdispatch", "lock"])
def test_a_superuser_cannot_delete_a_record_from_its_delete_page(
    superuser: Client, model: str
) -> None:
    row = records()[model]
    delete_url = reverse(f"admin:singleton_beat_{model}_delete", args=[row.pk])
    assert superuser.get(delete_url).status_code == 403
    assert superuser.post(delete_url, {"post": "yes"}).status_code == 403
    assert type(row).objects.filter(pk=row.pk).count() == 1


@pytest.mark.parametrize("model", ["taskrun", "slotdispatch", "lock"])
def test_a_superuser_cannot_bulk_delete_records_from_the_list(
    superuser: Client, model: str
) -> None:
    row = records()[model]
    changelist = reverse(f"admin:singleton_beat_{model}_changelist")
    page = superuser.get(changelist)
    assert page.status_code == 200
    assert b"delete_selected" not in page.content
    assert page.context["action_form"] is None
    response = superuser.post(
        changelist, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}
    )
    assert type(row).objects.filter(pk=row.pk).count() == 1
    assert response.status_code == 200, "the action is ignored: the list is shown again"


def staff_user(*permissions: str) -> User:
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def test_the_dashboard_needs_the_view_permission_on_task_runs_besides_staff(
    client: Client,
) -> None:
    user = staff_user("view_slotdispatch", "view_lock")
    client.force_login(user)
    assert client.get(reverse("admin:singleton_beat_dashboard")).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_taskrun"))
    user = User.objects.get(pk=user.pk)  # a fresh permission cache
    client.force_login(user)
    assert client.get(reverse("admin:singleton_beat_dashboard")).status_code == 200

"""Read-only admin pages for runs and slot decisions, the dashboard and schedule control."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from celery_singleton_beat.errors import ConfigurationError

from . import conf, control, dashboard
from .models import Lock, ScheduleAction, SlotDispatch, TaskRun


def to_the_second(value: dt.datetime | None) -> str:
    """An instant in the current time zone, to the second, with the zone's abbreviation:
    the admin's default format stops at the minute, where runs of a 5 s entry look alike."""
    if value is None:
        return "-"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Records are written by workers and beat; the admin only shows them.

    Nobody deletes through the admin, superusers included: a run or a slot decision is
    the evidence of what happened, and deleting a database lock row would force-release
    a lock that a running task still holds. Retention pruning removes old records.
    """

    actions = None  # no bulk action, "delete selected" included

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        """Every field; instants shown to the second, like the lists."""
        return [
            _to_the_second_of(f) if isinstance(f, models.DateTimeField) else f.name
            for f in self.model._meta.fields
        ]


def _to_the_second_of(field: models.DateTimeField) -> Any:  # type: ignore[type-arg]
    @admin.display(description=field.verbose_name)
    def shown(obj: Any) -> str:
        return to_the_second(getattr(obj, field.name))

    shown.__name__ = field.name
    return shown


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyAdmin):
    list_display = ("task_name", "status_badge", "attempt", "entry", "slot_time", "node", "pid",
                    "started", "runtime", "lock_wait", "fence")  # fmt: skip
    list_filter = ("status", "task_name", "entry", "node")
    search_fields = ("task_id", "task_name", "entry", "lock_key", "node", "args_hash", "holder")
    date_hierarchy = "started_at"
    list_select_related = False
    change_list_template = "admin/singleton_beat/taskrun/change_list.html"

    @admin.display(description=_("slot"), ordering="slot")
    def slot_time(self, obj: TaskRun) -> str:
        return to_the_second(obj.slot)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: TaskRun) -> str:
        return to_the_second(obj.started_at)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: TaskRun) -> str:
        colours = {"success": "#3a9a5b", "started": "#2f6fb3", "retry": "#d9822b"}
        return format_html(
            '<span style="color:{};font-weight:bold">{}</span>',
            colours.get(obj.status, "#c23b3b"), obj.get_status_display(),
        )  # fmt: skip

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.dashboard_view)
        return [path("dashboard/", view, name="singleton_beat_dashboard"), *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Staff with the view permission on task runs; anyone else is refused.

        Users who are not staff are sent to the login page (``admin_view``); staff without
        ``singleton_beat.view_taskrun`` get 403, as on the run list itself.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        window = request.GET.get("window", dashboard.DEFAULT_WINDOW)
        if window not in dashboard.WINDOWS:
            window = dashboard.DEFAULT_WINDOW
        settings = conf.load()
        context = {
            **self.admin_site.each_context(request),
            **dashboard.context(
                window, settings.database, settings.ttl_warning, settings.celery_app
            ),
            "title": _("Singleton beat dashboard"),
            "opts": self.model._meta,
            "runs_url": reverse("admin:singleton_beat_taskrun_changelist"),
            "slots_url": reverse("admin:singleton_beat_slotdispatch_changelist"),
            "control_url": reverse("admin:singleton_beat_control"),
        }
        return TemplateResponse(request, "admin/singleton_beat/dashboard.html", context)


@admin.register(SlotDispatch)
class SlotDispatchAdmin(ReadOnlyAdmin):
    list_display = ("entry", "slot_time", "outcome", "replica", "task_id", "late", "slots",
                    "publishes", "decided")  # fmt: skip
    list_filter = ("outcome", "entry", "replica")
    search_fields = ("entry", "task_id", "task_name", "replica")
    date_hierarchy = "slot"

    @admin.display(description=_("slot"), ordering="slot")
    def slot_time(self, obj: SlotDispatch) -> str:
        return to_the_second(obj.slot)

    @admin.display(description=_("decided"), ordering="decided_at")
    def decided(self, obj: SlotDispatch) -> str:
        return to_the_second(obj.decided_at)


@admin.register(Lock)
class LockAdmin(ReadOnlyAdmin):
    list_display = ("key", "token", "expires", "fence")
    search_fields = ("key", "token")

    @admin.display(description=_("expires (database clock)"), ordering="expires_ms")
    def expires(self, obj: Lock) -> str:
        if not obj.expires_ms:
            return "-"
        return to_the_second(dt.datetime.fromtimestamp(obj.expires_ms / 1000, dt.timezone.utc))


@admin.register(ScheduleAction)
class ScheduleActionAdmin(ReadOnlyAdmin):
    """Who paused, resumed or ran which entry; and the page to do it from.

    The page (``control/``) needs the view permission on schedule actions; its buttons
    POST (CSRF-protected) and need ``singleton_beat.control_schedule`` as well.
    """

    list_display = ("entry", "action", "user", "at_time", "run_id")
    list_filter = ("action", "entry", "user")
    search_fields = ("entry", "user", "run_id")
    change_list_template = "admin/singleton_beat/scheduleaction/change_list.html"

    @admin.display(description=_("at"), ordering="at")
    def at_time(self, obj: ScheduleAction) -> str:
        return to_the_second(obj.at)

    def get_urls(self) -> list[URLPattern]:
        page = self.admin_site.admin_view(self.control_view)
        act = self.admin_site.admin_view(require_POST(self.act_view))
        return [
            path("control/", page, name="singleton_beat_control"),
            path("control/<str:action>/", act, name="singleton_beat_control_act"),
            *super().get_urls(),
        ]

    def control_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        app = dashboard.celery_app(conf.load().celery_app)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Schedule control"),
            "opts": self.model._meta,
            "rows": control.rows(app),
            "backfills": control.backfills(app),
            "can_control": request.user.has_perm("singleton_beat.control_schedule"),
            "actions_url": reverse("admin:singleton_beat_scheduleaction_changelist"),
        }
        return TemplateResponse(request, "admin/singleton_beat/control.html", context)

    def act_view(self, request: HttpRequest, action: str) -> HttpResponse:
        if not request.user.has_perm("singleton_beat.control_schedule"):
            raise PermissionDenied
        name = request.POST.get("entry", "")
        if action not in ScheduleAction.Action.values or not name:
            return HttpResponseBadRequest("unknown action or entry")
        app = dashboard.celery_app(conf.load().celery_app)
        try:
            span = _span(request) if action == ScheduleAction.Action.BACKFILL else None
            done = control.act(app, action, name, request.user.get_username(), span)
        except ConfigurationError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(reverse("admin:singleton_beat_control"))
        label = ScheduleAction.Action(action).label
        messages.success(request, f"{label}: {name}" + (f" ({done.run_id})" if done.run_id else ""))
        return HttpResponseRedirect(reverse("admin:singleton_beat_control"))


def _span(request: HttpRequest) -> tuple[dt.datetime, dt.datetime]:
    """A backfill's start and end from its form (``datetime-local`` fields, in the current
    time zone); a field missing or unreadable is named, as the API names a bad one."""
    found = []
    for field in ("start", "end"):
        given = request.POST.get(field, "")
        moment = parse_datetime(given) if given else None
        if moment is None:
            raise ConfigurationError(field, given, "a date and time such as 2026-12-07T05:00")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        found.append(moment)
    return found[0], found[1]

"""What ran, what was skipped and why: one row per attempt and one per slot decision."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from celery_singleton_beat.core import schema


class TaskRun(models.Model):
    """One attempt of a task: run, retried, skipped, lost or revoked.

    A retry is a new attempt and a new row; a copy of a message that did not run (its
    slot already ran, its lock was held, the lock store was unreachable) has its own row
    too, so the history holds every decision a worker made.
    """

    class Status(models.TextChoices):
        STARTED = schema.RunStatus.STARTED.value, _("started")
        SUCCESS = schema.RunStatus.SUCCESS.value, _("success")
        FAILURE = schema.RunStatus.FAILURE.value, _("failure")
        RETRY = schema.RunStatus.RETRY.value, _("retry")
        SKIPPED_DUPLICATE = schema.RunStatus.SKIPPED_DUPLICATE.value, _("skipped (duplicate)")
        SKIPPED_LOCK_ERROR = (
            schema.RunStatus.SKIPPED_LOCK_ERROR.value,
            _("skipped (lock store unreachable)"),
        )
        LOCK_LOST = schema.RunStatus.LOCK_LOST.value, _("lock lost")
        REVOKED = schema.RunStatus.REVOKED.value, _("revoked")

    SKIPPED = (Status.SKIPPED_DUPLICATE, Status.SKIPPED_LOCK_ERROR)
    #: runs that went through to the end: their runtime is the task's own
    FINISHED = (Status.SUCCESS, Status.FAILURE, Status.LOCK_LOST)

    task_id = models.CharField(_("task id"), max_length=255, db_index=True)
    attempt = models.PositiveIntegerField(_("attempt"), default=0, help_text=_("0 = first run"))
    task_name = models.CharField(_("task"), max_length=255, db_index=True)
    entry = models.CharField(_("periodic entry"), max_length=255, blank=True, db_index=True)
    slot = models.DateTimeField(_("slot"), null=True, blank=True)
    status = models.CharField(_("status"), max_length=32, choices=Status.choices, db_index=True)
    node = models.CharField(_("node"), max_length=255, blank=True)
    pid = models.PositiveIntegerField(_("pid"), null=True, blank=True)
    lock_key = models.CharField(_("lock key"), max_length=512, blank=True)
    fence = models.BigIntegerField(_("fencing token"), null=True, blank=True)
    lock_wait = models.FloatField(_("lock wait (s)"), null=True, blank=True)
    holder = models.CharField(
        _("held by"), max_length=512, blank=True, help_text=_("who held the lock (skipped runs)")
    )
    started_at = models.DateTimeField(_("started"), db_index=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    runtime = models.FloatField(_("runtime (s)"), null=True, blank=True)
    result = models.TextField(_("result"), blank=True)
    exception = models.TextField(_("exception"), blank=True)
    args_hash = models.CharField(_("arguments hash"), max_length=64, blank=True, db_index=True)
    args_preview = models.TextField(_("arguments"), blank=True)
    note = models.CharField(_("note"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("task run")
        verbose_name_plural = _("task runs")
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["task_name", "started_at"], name="singleton_run_task_time")]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] #{self.attempt} {self.status}"


class SlotDispatch(models.Model):
    """The decision about one scheduled slot of a periodic entry (unique per entry and slot)."""

    class Outcome(models.TextChoices):
        DISPATCHED = schema.Outcome.DISPATCHED.value, _("dispatched")
        SKIPPED_MISFIRE = schema.Outcome.SKIPPED_MISFIRE.value, _("skipped (misfire)")
        PUBLISH_FAILED = schema.Outcome.PUBLISH_FAILED.value, _("publish failed")
        SKIPPED_OVERLAP = schema.Outcome.SKIPPED_OVERLAP.value, _("skipped (previous run not done)")

    entry = models.CharField(_("periodic entry"), max_length=255)
    slot = models.DateTimeField(_("slot"))
    task_name = models.CharField(_("task"), max_length=255, blank=True)
    task_id = models.CharField(_("task id"), max_length=255, blank=True)
    outcome = models.CharField(_("outcome"), max_length=32, choices=Outcome.choices, db_index=True)
    replica = models.CharField(_("replica"), max_length=255, help_text=_("host/pid of the beat"))
    decided_at = models.DateTimeField(_("decided"), db_index=True)
    late = models.FloatField(_("late (s)"), null=True, blank=True)
    slots = models.PositiveIntegerField(
        _("slots"), default=1, help_text=_("scheduled slots this decision stands for")
    )
    publishes = models.PositiveIntegerField(
        _("publishes"),
        default=0,
        help_text=_("times the message was published (more than 1: a replica re-sent it)"),
    )

    class Meta:
        verbose_name = _("slot dispatch")
        verbose_name_plural = _("slot dispatches")
        ordering = ["-slot", "entry"]
        constraints = [
            models.UniqueConstraint(fields=["entry", "slot"], name="singleton_slot_once")
        ]

    def __str__(self) -> str:
        return f"{self.entry} @ {self.slot:%Y-%m-%d %H:%M:%S} {self.outcome}"


class ScheduleVersion(models.Model):
    """One version of a periodic entry's schedule: the slots it owes from ``since`` until
    the entry's next version, as beat scheduled them. Written when a beat replica starts
    the entry or follows a change of its schedule, once however many replicas report it;
    ``slots`` empty: the entry left the schedule."""

    entry = models.CharField(_("periodic entry"), max_length=255)
    since = models.DateTimeField(
        _("since"), help_text=_("the slots after this moment are this version's")
    )
    slots = models.TextField(
        _("slots (JSON)"), blank=True, help_text=_("empty: the entry left the schedule")
    )
    replica = models.CharField(
        _("replica"), max_length=255, help_text=_("host:pid of the beat that reported it first")
    )

    class Meta:
        verbose_name = _("schedule version")
        verbose_name_plural = _("schedule versions")
        ordering = ["entry", "since", "id"]
        indexes = [models.Index(fields=["entry", "since"], name="singleton_version_since")]

    def __str__(self) -> str:
        return f"{self.entry} since {self.since:%Y-%m-%d %H:%M:%S}"


class Lock(models.Model):
    """A row per key of :class:`~django_celery_singleton_beat.locks.DatabaseLock`.

    The row stays after a release (``token`` empty) so that its fencing counter keeps
    rising across grants.
    """

    key = models.CharField(_("key"), max_length=255, primary_key=True)
    token = models.CharField(_("held with"), max_length=255, blank=True)
    expires_ms = models.BigIntegerField(_("expires (ms since epoch, database clock)"), default=0)
    fence = models.BigIntegerField(_("fencing token"), default=0)

    class Meta:
        verbose_name = _("database lock")
        verbose_name_plural = _("database locks")

    def __str__(self) -> str:
        return self.key


class ScheduleAction(models.Model):
    """A pause, resume, run now or backfill asked for from the admin: who, what, when."""

    class Action(models.TextChoices):
        PAUSE = "pause", _("pause")
        RESUME = "resume", _("resume")
        RUN_NOW = "run_now", _("run now")
        BACKFILL = "backfill", _("backfill")

    entry = models.CharField(_("periodic entry"), max_length=255, db_index=True)
    action = models.CharField(_("action"), max_length=16, choices=Action.choices)
    user = models.CharField(_("user"), max_length=150, help_text=_("who asked for it"))
    at = models.DateTimeField(_("at"), auto_now_add=True, db_index=True)
    run_id = models.CharField(
        _("run id"),
        max_length=64,
        blank=True,
        help_text=_("the run now's or the backfill's id (run now and backfill only)"),
    )

    class Meta:
        verbose_name = _("schedule action")
        verbose_name_plural = _("schedule actions")
        ordering = ["-at"]
        permissions = [("control_schedule", _("Can pause, resume and run schedule entries"))]

    def __str__(self) -> str:
        return f"{self.action} {self.entry} by {self.user}"


class SlotEntry(models.Model):
    """An entry's shared progress for the database slot store (``singleton_beat_store =
    "database"``): the newest slot handled and its counts."""

    name = models.CharField(_("periodic entry"), max_length=255, primary_key=True)
    last_ms = models.BigIntegerField(_("newest slot handled (ms since epoch)"))
    dispatched = models.BigIntegerField(_("dispatched"), default=0)
    skipped = models.BigIntegerField(_("skipped"), default=0)
    gone_ms = models.BigIntegerField(
        _("left the schedule (ms since epoch)"), default=0, help_text=_("0: never")
    )

    class Meta:
        verbose_name = _("slot store entry")
        verbose_name_plural = _("slot store entries")

    def __str__(self) -> str:
        return self.name


class SlotAnchor(models.Model):
    """The anchor of an interval entry's slots, set once per entry and interval."""

    entry = models.CharField(_("periodic entry"), max_length=255)
    every_ms = models.BigIntegerField(_("interval (ms)"))
    anchor_ms = models.BigIntegerField(_("anchor (ms since epoch)"))

    class Meta:
        verbose_name = _("slot anchor")
        verbose_name_plural = _("slot anchors")
        constraints = [
            models.UniqueConstraint(fields=["entry", "every_ms"], name="singleton_anchor_once")
        ]

    def __str__(self) -> str:
        return f"{self.entry} every {self.every_ms} ms"


class SlotFence(models.Model):
    """One slot's fence: claimed by ``token`` until ``expires_ms`` (database clock), then
    decided (``outcome``); kept until ``kept_until_ms`` so an expired claim is still seen."""

    entry = models.CharField(_("periodic entry"), max_length=255)
    slot_ms = models.BigIntegerField(_("slot (ms since epoch)"))
    token = models.CharField(_("claimed with"), max_length=255, blank=True)
    expires_ms = models.BigIntegerField(_("claim expires (ms, database clock)"), default=0)
    outcome = models.CharField(_("outcome"), max_length=32, blank=True)
    kept_until_ms = models.BigIntegerField(_("kept until (ms, database clock)"), db_index=True)

    class Meta:
        verbose_name = _("slot fence")
        verbose_name_plural = _("slot fences")
        constraints = [
            models.UniqueConstraint(fields=["entry", "slot_ms"], name="singleton_fence_once")
        ]

    def __str__(self) -> str:
        return f"{self.entry} @ {self.slot_ms}"


class ReplicaHeartbeat(models.Model):
    """A beat replica's heartbeat for the database slot store."""

    replica = models.CharField(_("replica"), max_length=255, primary_key=True)
    info = models.TextField(_("info (JSON)"))
    expires_ms = models.BigIntegerField(_("expires (ms, database clock)"), db_index=True)

    class Meta:
        verbose_name = _("replica heartbeat")
        verbose_name_plural = _("replica heartbeats")

    def __str__(self) -> str:
        return self.replica


class RuntimeSchedule(models.Model):
    """The runtime schedule of the database store: one document (entries added with
    ``celery_singleton_beat.schedule.api``, run-now requests, paused names) and its revision."""

    revision = models.BigIntegerField(_("revision"), default=0)
    doc = models.TextField(_("document (JSON)"), default="{}")

    class Meta:
        verbose_name = _("runtime schedule")
        verbose_name_plural = _("runtime schedules")

    def __str__(self) -> str:
        return f"revision {self.revision}"


class RunNowSent(models.Model):
    """A run-now request that was sent, kept for a while (database store)."""

    run_id = models.CharField(_("run id"), max_length=64, primary_key=True)
    kept_until_ms = models.BigIntegerField(_("kept until (ms, database clock)"), db_index=True)

    class Meta:
        verbose_name = _("run now sent")
        verbose_name_plural = _("run now sent")

    def __str__(self) -> str:
        return self.run_id


class EntryRunState(models.Model):
    """An entry's run state for its overlap policy (database store): the newest slot
    queued by beat, started and finished by a worker, and the slots held back."""

    entry = models.CharField(_("periodic entry"), max_length=255, primary_key=True)
    queued = models.BigIntegerField(_("queued slot (ms)"), default=0)
    started = models.BigIntegerField(_("started slot (ms)"), default=0)
    finished = models.BigIntegerField(_("finished slot (ms)"), default=0)
    overlapped = models.BigIntegerField(_("held back"), default=0)
    kept_until_ms = models.BigIntegerField(_("kept until (ms, database clock)"))

    class Meta:
        verbose_name = _("entry run state")
        verbose_name_plural = _("entry run states")

    def __str__(self) -> str:
        return self.entry


class CountedSlot(models.Model):
    """A slot of a django-celery-beat ``PeriodicTask`` whose run is counted in its row
    (``total_run_count``, ``last_run_at``): a slot sent again, by a replica taking over
    from one that died before marking it done, is not counted twice. Kept for a day."""

    entry = models.CharField(_("periodic task"), max_length=200)
    slot = models.BigIntegerField(_("slot (ms)"), db_index=True)

    class Meta:
        verbose_name = _("counted slot")
        verbose_name_plural = _("counted slots")
        constraints = [
            models.UniqueConstraint(fields=["entry", "slot"], name="singleton_beat_counted_once")
        ]

    def __str__(self) -> str:
        return f"{self.entry} @ {self.slot}"

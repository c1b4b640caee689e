"""django-celery-beat's tables as a schedule source, for ``celery beat -S singleton``.

``singleton_beat_schedule_source = "django_celery_beat"`` (Django:
``CELERY_SINGLETON_BEAT_SCHEDULE_SOURCE``) schedules every enabled ``PeriodicTask`` on
every replica, each slot sent once; the rows stay editable in django-celery-beat's admin.
What each field becomes:

- ``interval``, ``crontab`` (in the crontab's own timezone), ``solar``: the entry's slots;
  ``clocked``: one slot at ``clocked_time``;
- ``start_time``: no slot before it; ``expires`` (a datetime): no slot from it on, and the
  message expires then; ``expire_seconds``: the message expires that long after it is sent;
- ``one_off``: one slot, the schedule's first at least
  :data:`~celery_singleton_beat.sources.periodic_tasks.ONE_OFF_DELAY` after the row was
  saved (so that every replica has seen the row before it falls due), then the row is
  disabled by the replica that sent it, as django-celery-beat does (these rules are
  sqlalchemy-celery-beat's source's too: :mod:`celery_singleton_beat.sources.periodic_tasks`);
- ``args``/``kwargs`` (JSON), ``queue``, ``exchange``, ``routing_key``, ``priority``,
  ``headers`` (JSON): the message, as django-celery-beat sends it (with its
  ``periodic_task_name`` header, which django-celery-results records);
- ``headers["singleton_beat"]``: the row's per-entry settings (``jitter``,
  ``slot_kwarg``, ``pause_on_failure``, ...), taken out of the message's headers and
  checked when the row is read: a bad one leaves the row out, with one error line;
- ``last_run_at`` and ``total_run_count``: written once per slot, by the replica that
  sent it (an ``UPDATE`` that does not touch ``PeriodicTasks``, so it causes no re-read),
  before the slot is marked done; a slot sent again after a replica died in between is
  not counted twice (see :class:`~django_celery_singleton_beat.models.CountedSlot`).

Changes are seen through ``PeriodicTasks.last_update``, which django-celery-beat's models
and admin bump on every save and delete: one single-row query a second per replica, on a
connection kept open (see :meth:`DjangoCeleryBeatSource.version`); on PostgreSQL, saves
made through Django are also announced, and followed at the next tick (see
:meth:`DjangoCeleryBeatSource.hinted`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.sources.base import EntrySpec, ScheduleSource
from celery_singleton_beat.sources.periodic_tasks import (
    COUNTED_KEPT_MS,
    FORGET_EVERY,
    ONE_OFF_DELAY,
    per_entry,
    routing,
    row_schedule,
    take_policies,
)

logger = logging.getLogger(__name__)

__all__ = ["COUNTED_KEPT_MS", "FORGET_EVERY", "ONE_OFF_DELAY", "DjangoCeleryBeatSource"]

UTC = dt.timezone.utc
#: The PostgreSQL channel on which saves of django-celery-beat's rows are announced.
CHANNEL = "celery_singleton_beat_schedule"
LISTEN = f'LISTEN "{CHANNEL}"'.encode()
#: Up to this many changed rows are read by primary key; more, all enabled rows are read.
FEW = 500
#: The fields an entry is built from (the primary key first): a row whose values are
#: unchanged since the last read keeps its entry.
ROW_FIELDS = (
    "pk", "name", "task", "args", "kwargs", "queue", "exchange", "routing_key", "priority",
    "headers", "expires", "expire_seconds", "one_off", "start_time", "date_changed",
    "interval__every", "interval__period", "crontab__minute", "crontab__hour",
    "crontab__day_of_week", "crontab__day_of_month", "crontab__month_of_year",
    "crontab__timezone", "solar__event", "solar__latitude", "solar__longitude",
    "clocked__clocked_time",
)  # fmt: skip
#: In a row's digest: a NULL field, and the mark between two fields.
NULL_MARK, SEPARATOR = "\x1e", "\x1f"


class DjangoCeleryBeatSource(ScheduleSource):
    """Enabled ``django_celery_beat.models.PeriodicTask`` rows as entries."""

    name = "django_celery_beat"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        import django  # noqa: PLC0415  (the core never imports Django; this module is the app's)
        from django.apps import apps  # noqa: PLC0415
        from django.db import connections, router  # noqa: PLC0415

        if not apps.ready:
            django.setup()
        if not apps.is_installed("django_celery_singleton_beat"):
            raise ConfigurationError(
                "singleton_beat_schedule_source", self.name,
                "reading django-celery-beat's tables needs 'django_celery_singleton_beat' in "
                "INSTALLED_APPS, migrated (its table counts each slot's run once)",
            )  # fmt: skip
        from django_celery_beat import models  # noqa: PLC0415

        self.models = models
        tracks = models.PeriodicTasks
        self._alias: str = router.db_for_read(tracks)
        quote = connections[self._alias].ops.quote_name
        self._poll_sql = (
            f"SELECT {quote('last_update')} FROM {quote(tracks._meta.db_table)} "
            f"WHERE {quote('ident')} = 1"
        )
        self._poll_bytes = self._poll_sql.encode()
        self._write_alias: str = router.db_for_write(models.PeriodicTask)
        self._listener: Any = None
        self._notified = False
        self._next_forget = 0.0
        self._one_off: dict[str, bool] = {}
        self._built: dict[Any, tuple[tuple[Any, ...], str, EntrySpec, bool]] = {}

    def version(self) -> Hashable:
        """``PeriodicTasks.last_update``, as the driver returns it, read on a connection
        kept open between polls.

        With Django's default ``CONN_MAX_AGE = 0``, ``close_old_connections()`` closes
        the connection at each call: a poll a second would then pay a new connection
        each time (on PostgreSQL a server process, about 10 ms on loopback, against
        0.2 ms for the query). Beat serves no requests, so the connection stays open; a
        positive or unlimited ``CONN_MAX_AGE`` is honoured as Django does. A kept
        connection can be closed by the server meanwhile (a restart, an idle timeout):
        the query is then made once more on a new connection, so that the poll answers
        as it did with a connection per poll.
        """
        from django.db import DatabaseError, InterfaceError, connections  # noqa: PLC0415

        connection = connections[self._alias]
        if connection.settings_dict["CONN_MAX_AGE"] != 0:
            connection.close_if_unusable_or_obsolete()

        def read() -> Any:  # the driver's cursor: Django's wrapper adds ~0.3 ms to an idle poll
            connection.ensure_connection()
            with connection.wrap_database_errors:
                raw = connection.connection
                if _idle_psycopg(raw):
                    if self._listener is not raw:
                        self._listen(raw)
                    return _libpq_value(raw, self._poll_bytes)
                cursor = raw.cursor()
                try:
                    cursor.execute(self._poll_sql)
                    row = cursor.fetchone()
                finally:
                    cursor.close()
            return None if row is None else row[0]

        try:
            version: Hashable = read()
        except (DatabaseError, InterfaceError):
            connection.close()
            version = _guarded(read)
        return version

    def hinted(self) -> bool:
        """Whether a change notice (:data:`CHANNEL`) arrived on the poll's connection
        since the last call: read from what the server already sent, no round trip.

        On PostgreSQL with psycopg 3 the poll's connection listens on :data:`CHANNEL`, on
        which this app's signal handlers announce every save and delete of
        django-celery-beat's rows (:func:`announce_changes`, delivered when the saving
        transaction commits): a change saved through Django is then read at the
        replica's next tick, not at its next poll.
        """
        raw = self._listener
        if raw is None:
            return False
        try:
            with raw.lock:
                raw.pgconn.consume_input()
                while raw.pgconn.notifies() is not None:
                    self._notified = True
        except Exception:
            self._listener = None  # the next poll reconnects and listens again
            return True
        notified, self._notified = self._notified, False
        return notified

    def _listen(self, raw: Any) -> None:
        """Listen on :data:`CHANNEL` on ``raw``, before reading the version on it, so
        that no change falls between the two."""
        from psycopg import pq  # noqa: PLC0415

        with raw.lock:
            _checked(raw.pgconn, raw.pgconn.exec_(LISTEN), pq.ExecStatus.COMMAND_OK)
        # notices received while psycopg runs a query on this connection reach here
        raw.add_notify_handler(self._on_notice)
        self._listener = raw

    def _on_notice(self, _notice: Any) -> None:
        self._notified = True

    def entries(self) -> Mapping[str, EntrySpec]:
        """Every enabled row; a row whose fields (its schedule's included) are those of the
        last read keeps the entry built then, so the scheduler rebuilds only what changed."""
        enabled = self.models.PeriodicTask.objects.filter(enabled=True)
        keys = {v[0]: v for v in _guarded(lambda: list(_row_keys(enabled)))}
        changed = [pk for pk, key in keys.items() if self._built.get(pk, (None,))[0] != key]
        rows = enabled.filter(pk__in=changed).select_related(
            "interval", "crontab", "solar", "clocked"
        )
        built = {pk: self._built[pk] for pk in keys if pk not in changed}
        for row in _guarded(lambda: list(rows)) if changed else []:
            try:
                built[row.pk] = (keys[row.pk], row.name, self.entry(row), bool(row.one_off))
            except Exception as exc:
                logger.error(
                    "singleton beat: PeriodicTask %r is left out: %s: %s",
                    row.name, type(exc).__name__, exc,
                )  # fmt: skip
        self._built = {pk: item for pk, item in built.items() if item[0] == keys.get(pk)}
        self._one_off = {name: one_off for _key, name, _spec, one_off in self._built.values()}
        return {name: spec for _key, name, spec, _one_off in self._built.values()}

    def entry(self, row: Any) -> dict[str, Any]:
        """One row in ``beat_schedule`` form."""
        options = routing(row)
        if row.expires is not None or row.expire_seconds is not None:
            options["expires"] = row.expires if row.expires is not None else row.expire_seconds
        # a header, as django-celery-beat sends it: the worker's request (and so
        # django-celery-results) reads it there; Celery puts unknown options elsewhere
        options["headers"] = {**json.loads(row.headers or "{}"), "periodic_task_name": row.name}
        spec = {
            "task": row.task,
            "schedule": self.schedule(row),
            "args": json.loads(row.args or "[]"),
            "kwargs": json.loads(row.kwargs or "{}"),
            "options": options,
        }
        return take_policies(self.app, row.name, spec)

    def schedule(self, row: Any) -> Any:
        """The row's schedule; with ``start_time``, ``expires``, ``one_off`` or a clocked
        time, its slot times as a :class:`SlotSchedule`."""
        clocked = None if row.clocked is None else _aware(row.clocked.clocked_time)
        return row_schedule(
            self.app, row.name, None if clocked is not None else row.schedule,
            clocked=clocked, start=_aware(row.start_time), expires=_aware(row.expires),
            one_off=bool(row.one_off), changed=_aware(row.date_changed),
        )  # fmt: skip

    def published(self, name: str, slot: int, sent_at: float) -> None:
        self.published_many([(name, slot)], sent_at)

    def published_many(self, runs: Sequence[tuple[str, int]], sent_at: float) -> None:
        """Each row's ``last_run_at`` and ``total_run_count``, each slot counted once (a
        :class:`~django_celery_singleton_beat.models.CountedSlot` per slot, written in the
        same transaction as the counts); a one-off row is disabled."""
        from django.db import IntegrityError  # noqa: PLC0415

        try:
            _guarded(lambda: self._count(runs, sent_at))
        except IntegrityError:
            # another replica counted one of these slots meanwhile: read again, once
            _guarded(lambda: self._count(runs, sent_at))

    def _count(self, runs: Sequence[tuple[str, int]], sent_at: float) -> None:
        from django.db import transaction  # noqa: PLC0415
        from django.db.models import F, Q  # noqa: PLC0415

        from django_celery_singleton_beat.models import CountedSlot  # noqa: PLC0415

        alias = self._write_alias
        counted = CountedSlot.objects.using(alias)
        self._forget_old(counted)
        wanted = set(runs)
        one_off = False
        with transaction.atomic(using=alias):
            either = Q()
            for name in {name for name, _slot in wanted}:
                either |= Q(entry=name, slot__in=[s for n, s in wanted if n == name])
            seen = set(counted.filter(either).values_list("entry", "slot"))
            new = sorted(wanted - seen)
            counted.bulk_create([CountedSlot(entry=name, slot=slot) for name, slot in new])
            tasks = self.models.PeriodicTask.objects.using(alias)
            for name, count in per_entry(new).items():
                changes: dict[str, Any] = {
                    "last_run_at": _aware_or_naive(sent_at),
                    "total_run_count": F("total_run_count") + count,
                }
                if self._one_off.get(name, False):
                    changes["enabled"] = False
                    one_off = True
                tasks.filter(name=name).update(**changes)
        if one_off:
            self.models.PeriodicTasks.update_changed()

    def _forget_old(self, counted: Any) -> None:
        """Drop the counted slots older than :data:`COUNTED_KEPT_MS`, at most every
        :data:`FORGET_EVERY` seconds."""
        now = time.monotonic()
        if now < self._next_forget:
            return
        self._next_forget = now + FORGET_EVERY
        counted.filter(slot__lt=round(time.time() * 1000) - COUNTED_KEPT_MS).delete()

    def close(self) -> None:
        """Close this process's database connections, except one inside a transaction (a
        web request's, with ``ATOMIC_REQUESTS``), which closing would break."""
        from django.db import connections  # noqa: PLC0415

        for connection in connections.all(initialized_only=True):
            if not connection.in_atomic_block:
                connection.close()


def announce_changes() -> None:
    """Announce each save and delete of django-celery-beat's rows on :data:`CHANNEL`
    (PostgreSQL only), for the replicas' :meth:`DjangoCeleryBeatSource.hinted`; connected
    by this app when django-celery-beat is installed. Rows written without Django's
    signals (``QuerySet.update()``, SQL) are seen at the next poll, as before."""
    from django.db.models import signals  # noqa: PLC0415
    from django_celery_beat import models  # noqa: PLC0415

    senders = (
        models.PeriodicTask, models.PeriodicTasks, models.IntervalSchedule,
        models.CrontabSchedule, models.SolarSchedule, models.ClockedSchedule,
    )  # fmt: skip
    for sender in senders:
        for signal in (signals.post_save, signals.post_delete):
            signal.connect(_announce, sender=sender, dispatch_uid=f"{CHANNEL}:{sender.__name__}")


def _announce(sender: Any, using: str | None = None, **_: Any) -> None:
    from django.db import connections, router  # noqa: PLC0415

    connection = connections[using or router.db_for_write(sender)]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


def _guarded(call: Any) -> Any:
    """Run a query; on a database error drop the connection, so the next call reconnects."""
    from django.db import DatabaseError, InterfaceError, connections  # noqa: PLC0415

    try:
        return call()
    except (DatabaseError, InterfaceError):
        connections.close_all()
        raise


def _idle_psycopg(raw: Any) -> bool:
    """Whether ``raw`` is a psycopg 3 connection in autocommit with no transaction open,
    on which a query can go straight through libpq."""
    pgconn = getattr(raw, "pgconn", None)
    if pgconn is None or not getattr(raw, "autocommit", False):
        return False
    from psycopg import pq  # noqa: PLC0415  (psycopg 3 is the driver here)

    return bool(pgconn.transaction_status == pq.TransactionStatus.IDLE)


def _libpq_value(raw: Any, sql: bytes) -> Any:
    """The first column of the first row of ``sql``, as the server's text (``None`` for
    no row or NULL), run by libpq in one call.

    A poll runs after beat slept a while, when every instruction costs several times what
    it does in a busy loop: psycopg's cursor (its object, its generators, its loaders)
    then takes about as long as the round trip itself. The version needs no conversion,
    only a value that changes when the row does: the server's text of it.
    """
    from psycopg import pq  # noqa: PLC0415

    with raw.lock:
        result = raw.pgconn.exec_(sql)
    _checked(raw.pgconn, result, pq.ExecStatus.TUPLES_OK)
    return result.get_value(0, 0) if result.ntuples else None


def _checked(pgconn: Any, result: Any, status: Any) -> None:
    """Raise psycopg's error for a libpq ``result`` that is not ``status``."""
    from psycopg import OperationalError, errors, pq  # noqa: PLC0415

    if result.status == status:
        return
    if pgconn.status != pq.ConnStatus.OK:
        message = pgconn.error_message.decode(errors="replace").strip()
        raise OperationalError(message or "the connection to the database is lost")
    raise errors.error_from_result(result)


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    """A datetime of a row in Django's current timezone when naive (``USE_TZ = False``)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    from django.utils import timezone  # noqa: PLC0415

    return timezone.make_aware(moment)


def _aware_or_naive(seconds: float) -> dt.datetime:
    from django.conf import settings  # noqa: PLC0415
    from django.utils import timezone  # noqa: PLC0415

    moment = dt.datetime.fromtimestamp(seconds, UTC)
    return moment if settings.USE_TZ else timezone.make_naive(moment)


def _row_keys(rows: Any) -> Any:
    """Each row's primary key and a digest of the fields that make its entry (ROW_FIELDS,
    each as text, a NULL told apart from an empty text), computed by the database: a
    row whose digest is the one of the last read is not read again, and a read of
    100,000 rows moves two columns, not twenty-seven."""
    from django.db.models import F, Func, TextField, Value  # noqa: PLC0415
    from django.db.models.functions import MD5, Cast, Coalesce  # noqa: PLC0415

    class Joined(Func):
        """The texts joined in one flat call (Django's ``Concat`` nests a pair per
        argument, deeper than SQLite's parser takes)."""

        function = "CONCAT"
        output_field = TextField()

        def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
            return self.as_sql(
                compiler, connection, template="(%(expressions)s)", arg_joiner=" || ", **extra
            )

    parts: list[Any] = []
    for name in ROW_FIELDS[1:]:
        parts += [Coalesce(Cast(F(name), TextField()), Value(NULL_MARK)), Value(SEPARATOR)]
    return rows.annotate(entry_digest=MD5(Joined(*parts))).values_list("pk", "entry_digest")

"""sqlalchemy-celery-beat's tables as a schedule source, for ``celery beat -S singleton``.

``singleton_beat_schedule_source = "sqlalchemy_celery_beat"`` schedules every enabled
``PeriodicTask`` row of the database ``beat_dburi`` names (in the schema ``beat_schema``
names, as sqlalchemy-celery-beat's ``DatabaseScheduler`` reads them) on every replica,
each slot sent once; the rows stay editable however the project edits them. What each
field becomes is decided with the Django app's django-celery-beat source, in
:mod:`celery_singleton_beat.sources.periodic_tasks`:

- ``interval``, ``crontab`` (in the crontab's ``timezone``), ``solar``: the entry's slots;
  a clocked row: one slot at ``clocked_time``;
- ``start_time``: no slot before it; ``expires``: no slot from it on, and the message
  expires then; ``expire_seconds``: the message expires that long after it is sent;
- ``one_off``: one slot, then the row is disabled by the replica that sent it;
- ``args``/``kwargs`` (JSON), ``queue``, ``exchange``, ``routing_key``, ``priority``,
  ``headers`` (JSON): the message, as ``DatabaseScheduler`` sends it (with its
  ``periodic_task_name`` option);
- ``headers["singleton_beat"]``: the row's per-entry settings (``jitter``,
  ``slot_kwarg``, ``pause_on_failure``, ...), taken out of the message's headers and
  checked when the row is read: a bad one leaves the row out, with one error line;
- ``last_run_at`` and ``total_run_count``: written once per slot, by the replica that sent
  it, before the slot is marked done; a slot sent again after a replica died in between is
  not counted twice (``singleton_beat_counted_slots``, in the same transaction). A one-off
  row keeps its count (its own scheduler sets it back to 0 when it disables the row).

Changes are seen as ``DatabaseScheduler`` sees them: through ``last_update`` of
``celery_periodictaskchanged``, which sqlalchemy-celery-beat's models bump on every insert,
update and delete of a row made through its ORM (a row written with plain SQL is seen once
something bumps it, as with its own scheduler). One single-row query a second per replica,
on a connection kept open in autocommit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from celery_singleton_beat.connections.sqlalchemy import check_schema, counted_slots, engine_for
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.settings.config import upgrade_command
from celery_singleton_beat.sources.base import EntrySpec, ScheduleSource
from celery_singleton_beat.sources.periodic_tasks import (
    COUNTED_KEPT_MS,
    FORGET_EVERY,
    per_entry,
    routing,
    row_schedule,
    take_policies,
)

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

UTC = dt.timezone.utc
#: sqlalchemy-celery-beat's own default database, when ``beat_dburi`` is unset.
DEFAULT_DBURI = "sqlite:///schedule.db"
#: Seconds after a change during which every poll reads the rows again (see ``version``).
SETTLE = 2.0


class SqlAlchemyCeleryBeatSource(ScheduleSource):
    """Enabled ``sqlalchemy_celery_beat.models.PeriodicTask`` rows as entries."""

    name = "sqlalchemy_celery_beat"

    def __init__(self, app: Celery) -> None:
        super().__init__(app)
        try:
            from sqlalchemy_celery_beat import models, session  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigurationError(
                "singleton_beat_schedule_source", self.name,
                f"reading sqlalchemy-celery-beat's tables needs it installed: pip install "
                f"'celery-singleton-beat[sqlalchemy-celery-beat]' ({exc})",
            ) from None  # fmt: skip
        self.models = models
        url = app.conf.get("beat_dburi") or DEFAULT_DBURI
        schema = app.conf.get("beat_schema")
        self.engine = engine_for(url).execution_options(
            schema_translate_map={"celery_schema": schema}
        )
        # its tables, made as its scheduler makes them; ours (the counted slots) checked
        session.ModelBase.metadata.create_all(self.engine)
        check_schema(self.engine, upgrade_command(app))
        changes = models.PeriodicTaskChanged.__table__
        self._tasks = models.PeriodicTask.__table__
        self._changes = changes
        table = changes.name if schema is None else f"{schema}.{changes.name}"
        self._poll_sql = f"SELECT last_update FROM {table} WHERE id = 1"
        self._poller: sa.Connection | None = None
        self._one_off: dict[str, bool] = {}
        self._next_forget = 0.0
        self._polls = 0

    def version(self) -> Hashable:
        """``last_update`` of the change table's row, read on a connection kept open (a
        new one, once, when the kept one was closed meanwhile).

        MariaDB/MySQL keep that column in whole seconds: an edit made in the same second
        as the one before leaves it as it was. So for :data:`SETTLE` seconds after a
        change the version is new at every poll, and the rows are read again each time::

            12:00:00.2  edit A: last_update 12:00:00 ── replica reads the rows (A)
            12:00:00.7  edit B: last_update 12:00:00 ── unchanged, but still settling:
            12:00:01.2                                   the replica reads the rows (A, B)
        """
        try:
            value = self._read_version()
        except sa.exc.DBAPIError:
            self._drop_poller()
            value = self._read_version()
        if isinstance(value, dt.datetime) and abs(time.time() - _aware(value).timestamp()) < SETTLE:
            self._polls += 1
            return (value, self._polls)
        return value

    def _read_version(self) -> Hashable:
        if self._poller is None:
            self._poller = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        value: Hashable = self._poller.exec_driver_sql(self._poll_sql).scalar()
        return value

    def _drop_poller(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            try:
                poller.invalidate()
                poller.close()
            except sa.exc.SQLAlchemyError:
                pass

    def entries(self) -> Mapping[str, EntrySpec]:
        """Every enabled row, as ``DatabaseScheduler`` reads them."""
        task = self.models.PeriodicTask
        with sa.orm.Session(self.engine) as session:
            rows = session.scalars(sa.select(task).where(task.enabled.is_(True))).all()
            built: dict[str, EntrySpec] = {}
            one_off: dict[str, bool] = {}
            for row in rows:
                try:
                    built[row.name] = self.entry(row)
                except Exception as exc:
                    logger.error(
                        "singleton beat: PeriodicTask %r is left out: %s: %s",
                        row.name, type(exc).__name__, exc,
                    )  # fmt: skip
                    continue
                one_off[row.name] = bool(row.one_off)
        self._one_off = one_off
        return built

    def entry(self, row: Any) -> dict[str, Any]:
        """One row in ``beat_schedule`` form, with the options ``DatabaseScheduler`` sends."""
        options = routing(row)
        expires = row.expires_
        if isinstance(expires, dt.datetime):
            options["expires"] = _aware(expires).astimezone(self.app.timezone)
        elif expires:
            options["expires"] = expires
        options["headers"] = json.loads(row.headers or "{}")
        options["periodic_task_name"] = row.name
        spec = {
            "task": row.task,
            "schedule": self.schedule(row),
            "args": json.loads(row.args or "[]"),
            "kwargs": json.loads(row.kwargs or "{}"),
            "options": options,
        }
        return take_policies(self.app, row.name, spec)

    def schedule(self, row: Any) -> Any:
        """The row's schedule, bounded by its start, its expiry and ``one_off``."""
        model = row.schedule_model
        if model is None:
            raise ValueError(f"{row.name} has no schedule row ({row.discriminator!r})")
        clocked = isinstance(model, self.models.ClockedSchedule)
        return row_schedule(
            self.app, row.name, None if clocked else model.schedule,
            clocked=_aware(model.clocked_time) if clocked else None,
            start=_maybe_aware(row.start_time), expires=_maybe_aware(row.expires),
            one_off=bool(row.one_off), changed=_maybe_aware(row.date_changed),
        )  # fmt: skip

    def published_many(self, runs: Sequence[tuple[str, int]], sent_at: float) -> None:
        """Each row's ``last_run_at`` and ``total_run_count``, each slot counted once (a
        row of ``singleton_beat_counted_slots`` per slot, in the same transaction as the
        counts); a one-off row is disabled."""
        try:
            self._count(runs, sent_at)
        except sa.exc.IntegrityError:
            # another replica counted one of these slots meanwhile: read again, once
            self._count(runs, sent_at)

    def _count(self, runs: Sequence[tuple[str, int]], sent_at: float) -> None:
        wanted = set(runs)
        tasks, counted = self._tasks, counted_slots
        moment = dt.datetime.fromtimestamp(sent_at, UTC)
        with self.engine.begin() as connection:
            self._forget_old(connection)
            pairs = sa.tuple_(counted.c.entry, counted.c.slot).in_(sorted(wanted))
            seen = set(connection.execute(sa.select(counted.c.entry, counted.c.slot).where(pairs)))
            new = sorted(wanted - {(str(e), int(s)) for e, s in seen})
            if new:
                connection.execute(sa.insert(counted), [{"entry": e, "slot": s} for e, s in new])
            one_off = False
            for name, count in per_entry(new).items():
                changes: dict[str, Any] = {
                    "last_run_at": moment,
                    "total_run_count": tasks.c.total_run_count + count,
                    "date_changed": tasks.c.date_changed,  # a run is not an edit
                }
                if self._one_off.get(name, False):
                    changes["enabled"] = False
                    one_off = True
                connection.execute(sa.update(tasks).where(tasks.c.name == name).values(changes))
            if one_off:
                self._bump(connection)

    def _bump(self, connection: sa.Connection) -> None:
        """Tell every reader the rows changed, as sqlalchemy-celery-beat's models do."""
        now = dt.datetime.now(UTC)
        table = self._changes
        done = connection.execute(sa.update(table).where(table.c.id == 1).values(last_update=now))
        if done.rowcount == 0:
            connection.execute(sa.insert(table).values(id=1, last_update=now))

    def _forget_old(self, connection: sa.Connection) -> None:
        """Drop the counted slots older than a day, at most every ten minutes."""
        now = time.monotonic()
        if now < self._next_forget:
            return
        self._next_forget = now + FORGET_EVERY
        oldest = round(time.time() * 1000) - COUNTED_KEPT_MS
        connection.execute(sa.delete(counted_slots).where(counted_slots.c.slot < oldest))

    def close(self) -> None:
        self._drop_poller()


def _aware(moment: dt.datetime) -> dt.datetime:
    """A stored datetime, naive ones as UTC (SQLite keeps no zone), as
    sqlalchemy-celery-beat reads them."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _maybe_aware(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else _aware(moment)

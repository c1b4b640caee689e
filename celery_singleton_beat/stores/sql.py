"""The slot store on a SQL database, whoever connects to it: the statements, written once.

Beat's replicas share the schedule through seven tables (entries, anchors, slot fences,
heartbeats, the runtime schedule, run-now requests sent, run states), and expiry is
measured on the database's clock, so replicas with skewed clocks agree. The tables are the
Django app's models (``singleton_beat_store = "database"``) or the SQLAlchemy schema of
:mod:`celery_singleton_beat.connections.sqlalchemy` (``"sqlalchemy"``): the same columns
under other names, run by the same statements through a
:class:`~celery_singleton_beat.connections.sql.Database`.

Every operation is one short transaction with a fixed number of statements whatever the
number of slots, so a chunk of 500 due slots costs the same handful of round trips as
one slot.

A claim, in one transaction (on PostgreSQL each column travels as one array, and the
first statement already claims every slot nobody had claimed, so the next two only see
the rest)::

    INSERT … (entry, slot, token) … ON CONFLICT DO NOTHING      -- every fence exists
    SELECT … WHERE (entry, slot) IN (…) FOR UPDATE SKIP LOCKED   -- ours to decide
    UPDATE … SET token, expiry WHERE id IN (…)                   -- the ones we claim

A fence another replica is deciding at that very moment is skipped, not waited for, and
reported HELD: no replica ever queues behind another. Finishing marks a fence done only
where the claim is still ours (on PostgreSQL one ``UPDATE … FROM unnest(…) RETURNING``).

PostgreSQL and MariaDB/MySQL take row locks; SQLite, which has none, starts each
transaction with a write, so that transactions run one at a time (one host only: SQLite
on a network share is not safe).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from celery_singleton_beat.connections.sql import (
    INSERT_IGNORE,
    NOW_MS,
    ROWS,
    Database,
    among,
    deadlock,
    pairs,
    parts,
    row_source,
)
from celery_singleton_beat.core.schema import RUN_STATE_FIELDS, ClaimStatus
from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.locks.base import LockBackend
from celery_singleton_beat.locks.sql import SqlLock
from celery_singleton_beat.stores.base import (
    Claim,
    EntryState,
    Fence,
    SlotOutcome,
    SlotStore,
    StoredSchedule,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Tries of one transaction that lost a deadlock or a serialization race.
TRIES = 5


class Tables(NamedTuple):
    """The names of the store's tables (the columns are the same everywhere)."""

    entries: str
    anchors: str
    fences: str
    heartbeats: str
    schedule: str
    runs_sent: str
    run_states: str
    locks: str
    """The lock backend's table (the leader lease, the runtime schedule's edit lock)."""


class SqlSlotStore(SlotStore):
    """Schedule state in the tables ``tables`` of ``database``.

    Give it a connection of its own (a Django alias, an engine) when the application
    wraps work in transactions on the same one: the store's transactions must commit on
    their own.
    """

    down_text = "the database does not answer"
    up_text = "the database answers"

    def __init__(self, database: Database, tables: Tables) -> None:
        self.database = database
        self.tables = tables
        self.name = database.name
        self.fences = tables.fences
        self.entries = tables.entries
        self.anchor_table = tables.anchors
        self.heartbeats = tables.heartbeats
        self.schedule_table = tables.schedule
        self.sent_table = tables.runs_sent
        self.run_table = tables.run_states
        self._owner = threading.get_ident()

    # -- transactions -------------------------------------------------------------------

    def _run(self, what: str, step: Callable[[Any, str], T], write: bool = True) -> T:
        """Run ``step(cursor, vendor)`` in a transaction of its own, again after a
        deadlock; StoreUnavailable when the database does not answer. ``write=False``: the
        step only reads (SQLite need not take its write lock first)."""
        database = self.database
        refused = database.unsupported() or database.misuse()
        if refused:
            raise StoreUnavailable(self.name, what, refused)
        vendor = database.vendor
        for attempt in range(TRIES):
            try:
                with database.transaction() as cursor:
                    if vendor == "sqlite" and write:
                        # take the write lock first: a read-then-write transaction could
                        # not upgrade its lock while another one writes
                        cursor.execute(f"DELETE FROM {self.fences} WHERE 1 = 0")
                    return step(cursor, vendor)
            except database.errors as exc:
                if deadlock(exc) and attempt + 1 < TRIES:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                database.reset()
                raise StoreUnavailable(self.name, what, f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _now(self, cursor: Any, vendor: str) -> int:
        cursor.execute(f"SELECT {NOW_MS[vendor]}")
        return int(cursor.fetchone()[0])

    def _insert_ignore(
        self, cursor: Any, vendor: str, table: str, columns: str, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        verb, tail = INSERT_IGNORE[vendor]
        for part in parts(rows, ROWS[vendor]):
            source, params = row_source(vendor, part)
            cursor.execute(f"{verb} {table} ({columns}) {source}{tail}", params)

    def _fence_rows(
        self, cursor: Any, vendor: str, fences: Sequence[Fence], lock: str = ""
    ) -> dict[Fence, tuple[int, str, int, str, int]]:
        """(id, token, expires, outcome, kept until) of each fence row, by (entry, slot)."""
        found = {}
        for part in parts(sorted(set(fences)), ROWS[vendor]):
            where, params = pairs(vendor, part)
            cursor.execute(
                f"SELECT entry, slot_ms, id, token, expires_ms, outcome, kept_until_ms "
                f"FROM {self.fences} WHERE ({where}) ORDER BY entry, slot_ms{lock}",
                params,
            )
            for entry, slot, *row in cursor.fetchall():
                found[(str(entry), int(slot))] = (int(row[0]), str(row[1]), int(row[2]),
                                                  str(row[3]), int(row[4]))  # fmt: skip
        return found

    def _lasts(self, cursor: Any, vendor: str, names: Iterable[str]) -> dict[str, int]:
        lasts = {}
        for part in parts(sorted(set(names)), ROWS[vendor]):
            where, params = among(vendor, "name", part)
            cursor.execute(f"SELECT name, last_ms FROM {self.entries} WHERE {where}", params)
            lasts.update({str(n): int(last) for n, last in cursor.fetchall()})
        return lasts

    def _update_ids(
        self, cursor: Any, vendor: str, sets: str, params: list[Any], ids: list[int]
    ) -> None:
        for part in parts(sorted(ids), ROWS[vendor]):
            where, ids_params = among(vendor, "id", part)
            cursor.execute(f"UPDATE {self.fences} SET {sets} WHERE {where}", [*params, *ids_params])

    # -- schedule state -----------------------------------------------------------------

    def init(self, entries: Sequence[tuple[str, int | None]], now: int) -> list[EntryState]:
        def step(cursor: Any, vendor: str) -> list[EntryState]:
            names = sorted({name for name, _every in entries})
            self._insert_ignore(cursor, vendor, self.entries, "name, last_ms, dispatched, "
                                "skipped, gone_ms", [(n, now, 0, 0, 0) for n in names])  # fmt: skip
            intervals = sorted({(n, e) for n, e in entries if e is not None})
            self._insert_ignore(
                cursor, vendor, self.anchor_table, "entry, every_ms, anchor_ms",
                [(n, e, now - now % e) for n, e in intervals],
            )  # fmt: skip
            anchors = {}
            for part in parts(intervals, ROWS[vendor]):
                where, params = pairs(vendor, part, ("entry", "every_ms"))
                cursor.execute(
                    f"SELECT entry, every_ms, anchor_ms FROM {self.anchor_table} WHERE {where}",
                    params,
                )
                anchors.update({(str(n), int(e)): int(a) for n, e, a in cursor.fetchall()})
            lasts = self._lasts(cursor, vendor, names)
            return [
                EntryState(lasts[name], None if every is None else anchors[(name, every)])
                for name, every in entries
            ]

        return self._run("read the entries", step)

    def claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[Claim]:
        if not fences:
            return []
        try:
            return self._run(
                "claim slots",
                lambda c, v: self._claim(c, v, fences, token=token, ttl=ttl, retention=retention),
            )
        except StoreUnavailable as exc:
            return [Claim(None, 0, {self.name: exc.detail}) for _ in fences]

    def _claim(
        self, cursor: Any, vendor: str, fences: Sequence[Fence], *, token: str, ttl: float,
        retention: float,
    ) -> list[Claim]:  # fmt: skip
        now = self._now(cursor, vendor)
        keep = now + int(retention * 1000)
        expires_ms = now + max(1, int(ttl * 1000))
        wanted = sorted(set(fences))
        statuses: dict[Fence, tuple[ClaimStatus, bool]] = {}
        if vendor == "postgresql":
            # the usual case, a slot nobody claimed yet, is settled by the insert alone
            fresh = self._insert_returning(
                cursor, [(e, s, token, expires_ms, "", keep) for e, s in wanted]
            )
            statuses.update((f, (ClaimStatus.CLAIMED, False)) for f in fresh)
            wanted = [f for f in wanted if f not in fresh]
        else:
            self._insert_ignore(
                cursor, vendor, self.fences, "entry, slot_ms, token, expires_ms, outcome, "
                "kept_until_ms", [(e, s, "", 0, "", keep) for e, s in wanted],
            )  # fmt: skip
        lock = "" if vendor == "sqlite" else " FOR UPDATE SKIP LOCKED"
        rows = self._fence_rows(cursor, vendor, wanted, lock=lock) if wanted else {}
        lasts = self._lasts(cursor, vendor, (e for e, _s in fences))
        claimed: list[int] = []
        for fence, row in rows.items():
            holder, outcome = _live(row, now)
            if outcome:
                statuses[fence] = (ClaimStatus.DONE, False)
            elif holder and holder != token and row[2] > now:
                statuses[fence] = (ClaimStatus.HELD, False)
            else:
                statuses[fence] = (ClaimStatus.CLAIMED, bool(holder) and holder != token)
                claimed.append(row[0])
        self._update_ids(
            cursor, vendor, "token = %s, expires_ms = %s, outcome = '', kept_until_ms = %s",
            [token, expires_ms, keep], claimed,
        )  # fmt: skip
        held = (ClaimStatus.HELD, False)  # skipped: another replica is deciding on it now
        return [
            Claim(statuses.get(f, held)[0], lasts.get(f[0], 0),
                  taken_over=statuses.get(f, held)[1])
            for f in fences
        ]  # fmt: skip

    def unclaim(self, fences: Sequence[Fence], token: str) -> None:
        if not fences:
            return

        def step(cursor: Any, vendor: str) -> None:
            for part in parts(sorted(set(fences)), ROWS[vendor]):
                where, params = pairs(vendor, part)
                cursor.execute(
                    f"DELETE FROM {self.fences} WHERE ({where}) AND token = %s AND outcome = ''",
                    [*params, token],
                )

        try:
            self._run("give back claims", step)
        except StoreUnavailable as exc:
            logger.warning("singleton beat: could not give back %d claim(s): %s", len(fences), exc)

    def extend(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[bool]:
        if not fences:
            return []

        def step(cursor: Any, vendor: str) -> list[bool]:
            now = self._now(cursor, vendor)
            lock = "" if vendor == "sqlite" else " FOR UPDATE"
            rows = self._fence_rows(cursor, vendor, fences, lock)
            ours = {f: r[0] for f, r in rows.items() if r[1] == token and not r[3]}
            self._update_ids(
                cursor, vendor, "expires_ms = %s, kept_until_ms = %s",
                [now + max(1, int(ttl * 1000)), now + int(retention * 1000)], list(ours.values()),
            )  # fmt: skip
            return [f in ours for f in fences]

        try:
            return self._run("extend claims", step)
        except StoreUnavailable as exc:
            logger.warning("singleton beat: could not extend %d claim(s): %s", len(fences), exc)
            return [False] * len(fences)
        finally:
            if threading.get_ident() != self._owner:
                # the claim keeper's thread: a connection kept per thread dies with it
                self.database.thread_done()

    def finish(self, outcomes: Sequence[SlotOutcome], token: str, retention: float) -> list[bool]:
        if not outcomes:
            return []
        outcomes = [SlotOutcome(*o) for o in outcomes]
        try:
            return self._run("mark slots done", lambda c, v: self._finish(c, v, outcomes, token,
                                                                           retention))  # fmt: skip
        except StoreUnavailable as exc:
            logger.warning("singleton beat: could not mark %d slot(s) done: %s", len(outcomes), exc)
            return [False] * len(outcomes)

    def _insert_returning(self, cursor: Any, rows: list[tuple[Any, ...]]) -> set[Fence]:
        """PostgreSQL: insert fence rows where absent; the (entry, slot) of those inserted."""
        inserted: set[Fence] = set()
        for part in parts(rows, ROWS["postgresql"]):
            source, params = row_source("postgresql", part)
            cursor.execute(
                f"INSERT INTO {self.fences} (entry, slot_ms, token, expires_ms, outcome, "
                f"kept_until_ms) {source} ON CONFLICT DO NOTHING RETURNING entry, slot_ms",
                params,
            )
            inserted.update((str(e), int(s)) for e, s in cursor.fetchall())
        return inserted

    def _mark_done(
        self, cursor: Any, decided: dict[Fence, str], token: str, now: int, keep: int
    ) -> set[Fence]:
        """PostgreSQL: mark done, in one statement, the fences still ours (or unclaimed, or
        past their retention); then those absent. The (entry, slot) of those marked."""
        rows = [(e, s, outcome) for (e, s), outcome in sorted(decided.items())]
        source, params = row_source("postgresql", rows)
        cursor.execute(
            f"UPDATE {self.fences} AS f SET token = '', expires_ms = 0, outcome = v.outcome, "
            f"kept_until_ms = %s FROM ({source}) AS v(entry, slot_ms, outcome) "
            f"WHERE f.entry = v.entry AND f.slot_ms = v.slot_ms AND (f.kept_until_ms <= %s "
            f"OR (f.outcome = '' AND f.token IN ('', %s))) RETURNING f.entry, f.slot_ms",
            [keep, *params, now, token],
        )
        marked = {(str(e), int(s)) for e, s in cursor.fetchall()}
        absent = [(e, s, "", 0, o, keep) for e, s, o in rows if (e, s) not in marked]
        return marked | (self._insert_returning(cursor, absent) if absent else set())

    def _finish(
        self, cursor: Any, vendor: str, outcomes: list[SlotOutcome], token: str, retention: float
    ) -> list[bool]:
        now = self._now(cursor, vendor)
        if vendor == "postgresql":
            return self._finish_marked(cursor, vendor, outcomes, token, now, retention)
        keep = now + int(retention * 1000)
        fences = [(o.entry, o.slot) for o in outcomes]
        self._insert_ignore(
            cursor, vendor, self.fences, "entry, slot_ms, token, expires_ms, outcome, "
            "kept_until_ms", [(e, s, "", 0, "", keep) for e, s in sorted(set(fences))],
        )  # fmt: skip
        lock = "" if vendor == "sqlite" else " FOR UPDATE"
        rows = self._fence_rows(cursor, vendor, fences, lock=lock)
        done: list[bool] = []
        taken: set[int] = set()
        by_outcome: dict[str, list[int]] = {}
        progress: dict[str, list[int]] = {}
        for outcome in outcomes:
            row = rows[(outcome.entry, outcome.slot)]
            row_id, (holder, decided) = row[0], _live(row, now)
            ours = not decided and holder in ("", token) and row_id not in taken
            done.append(ours)
            if ours:
                taken.add(row_id)
                by_outcome.setdefault(str(outcome.outcome), []).append(row_id)
                last, sent, skipped = progress.setdefault(outcome.entry, [outcome.slot, 0, 0])
                progress[outcome.entry] = [max(last, outcome.slot), sent + outcome.sent,
                                           skipped + outcome.skipped]  # fmt: skip
        for decided, ids in sorted(by_outcome.items()):
            self._update_ids(
                cursor, vendor, "token = '', expires_ms = 0, outcome = %s, kept_until_ms = %s",
                [decided, keep], ids,
            )  # fmt: skip
        self._advance(cursor, vendor, progress)
        return done

    def _finish_marked(  # noqa: PLR0917  (the parts of one transaction)
        self, cursor: Any, vendor: str, outcomes: list[SlotOutcome], token: str, now: int,
        retention: float,
    ) -> list[bool]:  # fmt: skip
        """PostgreSQL: :meth:`finish` in two statements (three when a fence is absent)."""
        decided: dict[Fence, str] = {}
        for o in outcomes:
            decided.setdefault((o.entry, o.slot), str(o.outcome))
        marked = self._mark_done(cursor, decided, token, now, now + int(retention * 1000))
        done: list[bool] = []
        progress: dict[str, list[int]] = {}
        for outcome in outcomes:
            fence = (outcome.entry, outcome.slot)
            ours = fence in marked
            marked.discard(fence)  # a fence given twice is marked once
            done.append(ours)
            if ours:
                last, sent, skipped = progress.setdefault(outcome.entry, [outcome.slot, 0, 0])
                progress[outcome.entry] = [max(last, outcome.slot), sent + outcome.sent,
                                           skipped + outcome.skipped]  # fmt: skip
        self._advance(cursor, vendor, progress)
        return done

    def _advance(self, cursor: Any, vendor: str, progress: dict[str, list[int]]) -> None:
        """Raise each entry's last slot (never lower it) and add to its counts."""
        rows = [(name, *values, 0) for name, values in sorted(progress.items())]
        if vendor == "mysql":
            tail = (" ON DUPLICATE KEY UPDATE last_ms = GREATEST(last_ms, VALUES(last_ms)), "
                    "dispatched = dispatched + VALUES(dispatched), "
                    "skipped = skipped + VALUES(skipped)")  # fmt: skip
        else:
            greatest = "GREATEST" if vendor == "postgresql" else "MAX"
            t = self.entries
            tail = (f" ON CONFLICT (name) DO UPDATE SET last_ms = {greatest}({t}.last_ms, "
                    f"excluded.last_ms), dispatched = {t}.dispatched + excluded.dispatched, "
                    f"skipped = {t}.skipped + excluded.skipped")  # fmt: skip
        for part in parts(rows, ROWS[vendor]):
            source, params = row_source(vendor, part)
            cursor.execute(
                f"INSERT INTO {self.entries} (name, last_ms, dispatched, skipped, gone_ms) "
                f"{source}{tail}",
                params,
            )

    def outcomes(self, fences: Sequence[Fence]) -> list[str | None]:
        if not fences:
            return []

        def step(cursor: Any, vendor: str) -> list[str | None]:
            now = self._now(cursor, vendor)
            rows = self._fence_rows(cursor, vendor, fences)
            found: list[str | None] = []
            for fence in fences:
                row = rows.get(fence)
                live = row is not None and row[4] > now and row[3] != ""
                found.append(row[3] if live and row is not None else None)
            return found

        return self._run("read slots", step, write=False)

    def entry_counts(self, name: str) -> dict[str, int]:
        def step(cursor: Any, vendor: str) -> dict[str, int]:
            cursor.execute(
                f"SELECT last_ms, dispatched, skipped FROM {self.entries} WHERE name = %s",
                [name],
            )
            row = cursor.fetchone()
            if row is None:
                return {}
            return {"last": int(row[0]), "dispatched": int(row[1]), "skipped": int(row[2])}

        return self._run("read an entry", step)

    # -- schedules that change while beat runs ---------------------------------------

    def start_at(self, names: Sequence[str], slot: int) -> None:
        def step(cursor: Any, vendor: str) -> None:
            for part in parts(sorted(set(names)), ROWS[vendor]):
                where, params = among(vendor, "name", part)
                cursor.execute(
                    f"UPDATE {self.entries} SET last_ms = %s WHERE last_ms < %s AND {where}",
                    [slot, slot, *params],
                )

        if names:
            self._run("raise entries' last slot", step)

    def mark_gone(self, names: Sequence[str], now: int) -> None:
        def step(cursor: Any, vendor: str) -> None:
            for part in parts(sorted(set(names)), ROWS[vendor]):
                where, params = among(vendor, "name", part)
                cursor.execute(
                    f"UPDATE {self.entries} SET gone_ms = %s WHERE {where}", [now, *params]
                )

        if names:
            self._run("mark entries gone", step)

    def gone(self, names: Sequence[str]) -> list[int]:
        def step(cursor: Any, vendor: str) -> dict[str, int]:
            found = {}
            for part in parts(sorted(set(names)), ROWS[vendor]):
                where, params = among(vendor, "name", part)
                cursor.execute(f"SELECT name, gone_ms FROM {self.entries} WHERE {where}", params)
                found.update({str(n): int(g) for n, g in cursor.fetchall()})
            return found

        if not names:
            return []
        found = self._run("read when entries left", step)
        return [found.get(name, 0) for name in names]

    def anchors(self, entries: Sequence[tuple[str, int]]) -> list[int | None]:
        def step(cursor: Any, vendor: str) -> dict[tuple[str, int], int]:
            found = {}
            for part in parts(sorted({name for name, _every in entries}), ROWS[vendor]):
                where, params = among(vendor, "entry", part)
                cursor.execute(
                    f"SELECT entry, every_ms, anchor_ms FROM {self.anchor_table} WHERE {where}",
                    params,
                )
                found.update({(str(e), int(every)): int(a) for e, every, a in cursor.fetchall()})
            return found

        if not entries:
            return []
        found = self._run("read anchors", step)
        return [found.get((name, every)) for name, every in entries]

    # -- the runtime schedule ------------------------------------------------------------

    def schedule_revision(self) -> int:
        def step(cursor: Any, vendor: str) -> int:
            cursor.execute(f"SELECT revision FROM {self.schedule_table} WHERE id = 1")
            row = cursor.fetchone()
            return 0 if row is None else int(row[0])

        return self._run("read the schedule revision", step, write=False)

    def read_schedule(self) -> StoredSchedule:
        def step(cursor: Any, vendor: str) -> StoredSchedule:
            cursor.execute(f"SELECT revision, doc FROM {self.schedule_table} WHERE id = 1")
            row = cursor.fetchone()
            if row is None:
                return StoredSchedule(0, {})
            return StoredSchedule(int(row[0]), json.loads(row[1] or "{}"))

        return self._run("read the schedule", step, write=False)

    def write_schedule(self, revision: int, doc: dict[str, Any]) -> bool:
        payload = json.dumps(doc, sort_keys=True, separators=(",", ":"))

        def step(cursor: Any, vendor: str) -> bool:
            self._insert_ignore(
                cursor, vendor, self.schedule_table, "id, revision, doc", [(1, 0, "{}")]
            )
            cursor.execute(
                f"UPDATE {self.schedule_table} SET revision = %s, doc = %s "
                f"WHERE id = 1 AND revision < %s",
                [revision, payload, revision],
            )
            return bool(cursor.rowcount == 1)

        return self._run("write the schedule", step)

    def mark_runs_sent(self, run_ids: Sequence[str], retention: float) -> None:
        def step(cursor: Any, vendor: str) -> None:
            until = self._now(cursor, vendor) + int(retention * 1000)
            cursor.execute(f"DELETE FROM {self.sent_table} WHERE kept_until_ms <= %s",
                           [until - int(retention * 1000)])  # fmt: skip
            self._insert_ignore(
                cursor, vendor, self.sent_table, "run_id, kept_until_ms",
                [(run_id, until) for run_id in sorted(set(run_ids))],
            )  # fmt: skip

        if run_ids:
            self._run("mark runs sent", step)

    def runs_sent(self, run_ids: Sequence[str]) -> set[str]:
        def step(cursor: Any, vendor: str) -> set[str]:
            found: set[str] = set()
            for part in parts(sorted(set(run_ids)), ROWS[vendor]):
                where, params = among(vendor, "run_id", part)
                cursor.execute(
                    f"SELECT run_id FROM {self.sent_table} "
                    f"WHERE kept_until_ms > {NOW_MS[vendor]} AND {where}",
                    params,
                )
                found.update(str(r) for (r,) in cursor.fetchall())
            return found

        return self._run("read runs sent", step, write=False) if run_ids else set()

    # -- run state ---------------------------------------------------------------------

    def run_states(self, entries: Sequence[str]) -> dict[str, dict[str, int]]:
        fields = ", ".join(RUN_STATE_FIELDS)

        def step(cursor: Any, vendor: str) -> dict[str, dict[str, int]]:
            found: dict[str, dict[str, int]] = {}
            for part in parts(sorted(set(entries)), ROWS[vendor]):
                where, params = among(vendor, "entry", part)
                cursor.execute(
                    f"SELECT entry, {fields} FROM {self.run_table} "
                    f"WHERE kept_until_ms > {NOW_MS[vendor]} AND {where}",
                    params,
                )
                for entry, *values in cursor.fetchall():
                    found[str(entry)] = dict(zip(RUN_STATE_FIELDS, map(int, values), strict=True))
            return found

        if not entries:
            return {}
        found = self._run("read run states", step, write=False)
        empty = dict.fromkeys(RUN_STATE_FIELDS, 0)
        return {entry: found.get(entry, dict(empty)) for entry in entries}

    def _run_rows(self, cursor: Any, vendor: str, entries: Iterable[str], until: int) -> None:
        """Every entry has a row; a row past its retention starts again from zeros."""
        names = sorted(set(entries))
        zeros = ", ".join(f"{f} = 0" for f in RUN_STATE_FIELDS)
        for part in parts(names, ROWS[vendor]):
            where, params = among(vendor, "entry", part)
            cursor.execute(
                f"UPDATE {self.run_table} SET {zeros} "
                f"WHERE kept_until_ms <= {NOW_MS[vendor]} AND {where}",
                params,
            )
        self._insert_ignore(
            cursor, vendor, self.run_table, "entry, queued, started, finished, overlapped, "
            "kept_until_ms", [(name, 0, 0, 0, 0, until) for name in names],
        )  # fmt: skip

    def raise_run_states(self, writes: Sequence[tuple[str, str, int]], retention: float) -> None:
        for _entry, field, _slot in writes:
            if field not in RUN_STATE_FIELDS[:3]:
                raise ValueError(f"run state field {field!r} is not one of {RUN_STATE_FIELDS[:3]}")

        def step(cursor: Any, vendor: str) -> None:
            until = self._now(cursor, vendor) + int(retention * 1000)
            self._run_rows(cursor, vendor, (entry for entry, _f, _s in writes), until)
            for entry, field, slot in sorted(writes):
                cursor.execute(
                    f"UPDATE {self.run_table} SET {field} = CASE WHEN {field} < %s THEN %s "
                    f"ELSE {field} END, kept_until_ms = %s WHERE entry = %s",
                    [slot, slot, until, entry],
                )

        if writes:
            self._run("write run states", step)

    def count_overlapped(self, entry: str, count: int) -> None:
        def step(cursor: Any, vendor: str) -> None:
            until = self._now(cursor, vendor) + 7 * 86_400_000
            self._run_rows(cursor, vendor, [entry], until)
            cursor.execute(
                f"UPDATE {self.run_table} SET overlapped = overlapped + %s WHERE entry = %s",
                [count, entry],
            )

        self._run("count a held-back slot", step)

    # -- replicas -----------------------------------------------------------------------

    def heartbeat(self, replica: str, info: dict[str, Any], ttl: float) -> int:
        payload = json.dumps(info, sort_keys=True)

        def step(cursor: Any, vendor: str) -> int:
            clock = self._now(cursor, vendor)
            t = self.heartbeats
            cursor.execute(f"DELETE FROM {t} WHERE expires_ms <= %s OR replica = %s",
                           [clock, replica])  # fmt: skip
            cursor.execute(
                f"INSERT INTO {t} (replica, info, expires_ms) VALUES (%s, %s, %s)",
                [replica, payload, clock + int(ttl * 1000)],
            )
            cursor.execute(
                f"SELECT (SELECT COUNT(*) FROM {t}), "
                f"(SELECT revision FROM {self.schedule_table} WHERE id = 1)"
            )
            alive, revision = cursor.fetchone()
            # fences past their retention go with the heartbeats (an index on it)
            cursor.execute(f"DELETE FROM {self.fences} WHERE kept_until_ms <= %s", [clock])
            self.saw_schedule_revision(int(revision or 0))
            return int(alive)

        return self._run("record a heartbeat", step)

    def replicas(self) -> list[dict[str, Any]]:
        def step(cursor: Any, vendor: str) -> list[dict[str, Any]]:
            now = self._now(cursor, vendor)
            cursor.execute(
                f"SELECT info, expires_ms FROM {self.heartbeats} WHERE expires_ms > %s", [now]
            )
            found = []
            for raw, expires in cursor.fetchall():
                info = json.loads(raw)
                # seconds since the heartbeat, on the database's clock (written ttl before
                # it expires); None when the replica did not say its ttl
                ttl = info.get("ttl")
                seen = None if ttl is None else round(max(0.0, ttl - (expires - now) / 1000), 3)
                found.append({**info, "seen_ago": seen})
            return found

        found = self._run("list the replicas", step)
        return sorted(found, key=lambda r: (r["host"], r["pid"]))

    def forget_replica(self, replica: str) -> None:
        def step(cursor: Any, vendor: str) -> None:
            cursor.execute(f"DELETE FROM {self.heartbeats} WHERE replica = %s", [replica])

        try:
            self._run("forget a replica", step)
        except StoreUnavailable as exc:
            logger.warning("singleton beat: could not drop this replica's heartbeat: %s", exc)

    def leader_lock(self, owner: str) -> LockBackend:
        return SqlLock(self.database, self.tables.locks)

    def close(self) -> None:
        self.database.close()


def _live(row: tuple[int, str, int, str, int], now: int) -> tuple[str, str]:
    """A fence row's holder and outcome; none once past its retention (as if absent)."""
    _id, holder, _expires, outcome, kept_until = row
    return ("", "") if kept_until <= now else (holder, outcome)

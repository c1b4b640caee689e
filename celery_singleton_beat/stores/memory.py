"""The slot store in one process's memory: for tests and single-process tools.

Replicas in other processes cannot see it, so it gives no high availability; it follows
the same contract as the Redis and database stores (``tests/stores/test_contract.py``),
on a clock a test can drive.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery_singleton_beat.core.schema import RUN_STATE_FIELDS, ClaimStatus
from celery_singleton_beat.locks.base import LockBackend
from celery_singleton_beat.locks.memory import MemoryLock
from celery_singleton_beat.stores.base import (
    Claim,
    EntryState,
    Fence,
    SlotOutcome,
    SlotStore,
    StoredSchedule,
)


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclasses.dataclass
class _Fence:
    token: str = ""
    """The claimant while claimed; empty once done."""
    expires: int = 0
    outcome: str = ""
    """Set once the slot is decided."""
    kept_until: int = 0


@dataclasses.dataclass
class _Entry:
    last: int
    dispatched: int = 0
    skipped: int = 0


class MemorySlotStore(SlotStore):
    """Every record in dicts guarded by one mutex; ``clock`` gives the store's time in ms."""

    name = "memory"

    def __init__(self, clock: Callable[[], int] = _wall_ms) -> None:
        self.clock = clock
        self._mutex = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._anchors: dict[tuple[str, int], int] = {}
        self._fences: dict[Fence, _Fence] = {}
        self._replicas: dict[str, tuple[int, int, dict[str, Any]]] = {}
        """Each replica's heartbeat: until when it lives, when it was written, its info."""
        self._gone: dict[str, int] = {}
        self._schedule: tuple[int, dict[str, Any]] = (0, {})
        self._sent: dict[str, int] = {}
        self._runs: dict[str, tuple[dict[str, int], int]] = {}
        self._locks = MemoryLock()

    def _fence(self, fence: Fence, now: int) -> _Fence | None:
        record = self._fences.get(fence)
        if record is not None and record.kept_until <= now:
            del self._fences[fence]
            return None
        return record

    def init(self, entries: Sequence[tuple[str, int | None]], now: int) -> list[EntryState]:
        with self._mutex:
            found = []
            for name, every in entries:
                entry = self._entries.setdefault(name, _Entry(now))
                anchor = None
                if every is not None:
                    anchor = self._anchors.setdefault((name, every), now - now % every)
                found.append(EntryState(entry.last, anchor))
            return found

    def claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[Claim]:
        with self._mutex:
            now = self.clock()
            return [self._claim(f, token, now, ttl, retention) for f in fences]

    def _claim(self, fence: Fence, token: str, now: int, ttl: float, retention: float) -> Claim:
        entry = self._entries.get(fence[0])
        last = entry.last if entry is not None else 0
        record = self._fence(fence, now)
        taken_over = False
        if record is not None:
            if record.outcome:
                return Claim(ClaimStatus.DONE, last)
            if record.token != token:
                if record.expires > now:
                    return Claim(ClaimStatus.HELD, last)
                taken_over = True
        expires = now + max(1, int(ttl * 1000))
        self._fences[fence] = _Fence(token, expires, "", now + int(retention * 1000))
        return Claim(ClaimStatus.CLAIMED, last, taken_over=taken_over)

    def unclaim(self, fences: Sequence[Fence], token: str) -> None:
        with self._mutex:
            now = self.clock()
            for fence in fences:
                record = self._fence(fence, now)
                if record is not None and not record.outcome and record.token == token:
                    del self._fences[fence]

    def extend(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[bool]:
        with self._mutex:
            now = self.clock()
            held = []
            for fence in fences:
                record = self._fence(fence, now)
                ours = record is not None and not record.outcome and record.token == token
                if record is not None and ours:
                    record.expires = now + max(1, int(ttl * 1000))
                    record.kept_until = now + int(retention * 1000)
                held.append(ours)
            return held

    def finish(self, outcomes: Sequence[SlotOutcome], token: str, retention: float) -> list[bool]:
        with self._mutex:
            now = self.clock()
            return [self._finish(SlotOutcome(*o), token, now, retention) for o in outcomes]

    def _finish(self, outcome: SlotOutcome, token: str, now: int, retention: float) -> bool:
        fence = (outcome.entry, outcome.slot)
        record = self._fence(fence, now)
        if record is not None and (record.outcome or record.token != token):
            return False
        self._fences[fence] = _Fence("", 0, str(outcome.outcome), now + int(retention * 1000))
        entry = self._entries.setdefault(outcome.entry, _Entry(outcome.slot))
        entry.last = max(entry.last, outcome.slot)
        entry.dispatched += outcome.sent
        entry.skipped += outcome.skipped
        return True

    def outcomes(self, fences: Sequence[Fence]) -> list[str | None]:
        with self._mutex:
            now = self.clock()
            found = [self._fence(fence, now) for fence in fences]
        return [r.outcome if r is not None and r.outcome else None for r in found]

    def entry_counts(self, name: str) -> dict[str, int]:
        with self._mutex:
            entry = self._entries.get(name)
            if entry is None:
                return {}
            return dataclasses.asdict(entry)

    def start_at(self, names: Sequence[str], slot: int) -> None:
        with self._mutex:
            for name in names:
                entry = self._entries.get(name)
                if entry is not None:
                    entry.last = max(entry.last, slot)

    def mark_gone(self, names: Sequence[str], now: int) -> None:
        with self._mutex:
            self._gone.update(dict.fromkeys(names, now))

    def gone(self, names: Sequence[str]) -> list[int]:
        with self._mutex:
            return [self._gone.get(name, 0) for name in names]

    def anchors(self, entries: Sequence[tuple[str, int]]) -> list[int | None]:
        with self._mutex:
            return [self._anchors.get((name, every)) for name, every in entries]

    def schedule_revision(self) -> int:
        with self._mutex:
            return self._schedule[0]

    def read_schedule(self) -> StoredSchedule:
        with self._mutex:
            revision, doc = self._schedule
        return StoredSchedule(revision, json.loads(json.dumps(doc)))  # a copy, as a store gives

    def write_schedule(self, revision: int, doc: dict[str, Any]) -> bool:
        copy = json.loads(json.dumps(doc))
        with self._mutex:
            if self._schedule[0] >= revision:
                return False
            self._schedule = (revision, copy)
            return True

    def mark_runs_sent(self, run_ids: Sequence[str], retention: float) -> None:
        with self._mutex:
            until = self.clock() + int(retention * 1000)
            self._sent.update(dict.fromkeys(run_ids, until))

    def runs_sent(self, run_ids: Sequence[str]) -> set[str]:
        with self._mutex:
            now = self.clock()
            return {r for r in run_ids if self._sent.get(r, 0) > now}

    def run_states(self, entries: Sequence[str]) -> dict[str, dict[str, int]]:
        with self._mutex:
            now = self.clock()
            states = {}
            for entry in entries:
                state, until = self._runs.get(entry, ({}, 0))
                live = state if until > now else {}
                states[entry] = {field: live.get(field, 0) for field in RUN_STATE_FIELDS}
            return states

    def raise_run_states(self, writes: Sequence[tuple[str, str, int]], retention: float) -> None:
        with self._mutex:
            now = self.clock()
            for entry, field, slot in writes:
                state, until = self._runs.get(entry, ({}, 0))
                state = dict(state) if until > now else {}
                state[field] = max(state.get(field, 0), slot)
                self._runs[entry] = (state, now + int(retention * 1000))

    def count_overlapped(self, entry: str, count: int) -> None:
        with self._mutex:
            now = self.clock()
            state, until = self._runs.get(entry, ({}, 0))
            state = dict(state) if until > now else {}
            state["overlapped"] = state.get("overlapped", 0) + count
            self._runs[entry] = (state, max(until, now + 7 * 86_400_000))

    def heartbeat(self, replica: str, info: dict[str, Any], ttl: float) -> int:
        with self._mutex:
            clock = self.clock()
            self._replicas[replica] = (clock + int(ttl * 1000), clock, dict(info))
            self.saw_schedule_revision(self._schedule[0])
            return len(self._live(clock))

    def _live(self, clock: int) -> list[dict[str, Any]]:
        for name in [n for n, (until, _at, _i) in self._replicas.items() if until <= clock]:
            del self._replicas[name]
        return [
            {**info, "seen_ago": (clock - at) / 1000}
            for _until, at, info in self._replicas.values()
        ]

    def replicas(self) -> list[dict[str, Any]]:
        with self._mutex:
            live = self._live(self.clock())
        return sorted(live, key=lambda r: (r["host"], r["pid"]))

    def forget_replica(self, replica: str) -> None:
        with self._mutex:
            self._replicas.pop(replica, None)

    def leader_lock(self, owner: str) -> LockBackend:
        return self._locks

"""The slot store on a ZooKeeper ensemble: ``singleton_beat_store = "zookeeper"``.

For teams that run ZooKeeper already (beside Kafka, Hadoop, Solr): every write is agreed
by a majority of the ensemble before it is answered, so a claim or a finish that was
answered survives the loss of any minority of members, and no write waits on a clock or
on asynchronous replication.

Layout under ``{chroot}/{key prefix}`` (``/singleton-beat`` by default)::

    clock                       written to read the ensemble's time (its mtime)
    entries/{entry}             {"last", "dispatched", "skipped"}
    anchors/{entry}:{every}     an interval entry's anchor (created once, never changed)
    fences/{entry}/{slot}       {"token", "ttl", "outcome", "kept"}
    gone/{entry}, revision, document, runs/{id}, run_states/{entry}
    replicas/{replica}          ephemeral: {"info", "ttl"}
    locks/{key}[/holder]        the leader lease and the schedule's edit lock

**Writes are versioned.** Each method reads the znodes it decides on in one pipelined round
trip, decides, and writes them in one ``transaction()`` whose every ``set_data`` and
``delete`` names the version it read (and every ``create`` fails if the znode appeared):
if another replica wrote any of them meanwhile, nothing is written, and the method reads
again and decides again. Two replicas claiming the same slot: one transaction commits,
the other is rolled back and then reads the slot HELD.

**Expiry is on the ensemble's clock.** A claim expires at its fence's ``mtime`` (stamped by
the ensemble's leader when the claim was written) plus its TTL, compared with the time
read by writing the ``clock`` znode in the same round trip as the fence
(:class:`~celery_singleton_beat.connections.zookeeper.ZooKeeper`). A replica's clock
decides nothing; after an election the new leader's clock stamps writes, so keep the
members' clocks synchronised (NTP) as ZooKeeper itself asks.

A replica's heartbeat is an ephemeral znode: it goes with the replica's session (and it
expires after its TTL on the ensemble's clock too). The leader lease is a lock of
:class:`~celery_singleton_beat.locks.zookeeper.ZooKeeperLock`, on an ephemeral znode.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeGuard

from celery_singleton_beat.connections.zookeeper import (
    Znode,
    ZooKeeper,
    dumps,
    loads,
    node_name,
)
from celery_singleton_beat.core.schema import RUN_STATE_FIELDS, ClaimStatus
from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.locks.base import LockBackend
from celery_singleton_beat.locks.zookeeper import ZooKeeperLock
from celery_singleton_beat.stores.base import (
    Claim,
    EntryState,
    Fence,
    SlotOutcome,
    SlotStore,
    StoredSchedule,
)

if TYPE_CHECKING:
    from celery import Celery

    from celery_singleton_beat.settings.config import Config

__all__ = ["ZooKeeperSlotStore"]

#: A write of a transaction: ("create", path, data) | ("set", path, data, version)
#: | ("delete", path, version).
Op = tuple[Any, ...]
#: Operations per transaction (ZooKeeper refuses a request above ``jute.maxbuffer``, 1 MB).
CHUNK = 400
#: Attempts of one read-decide-write before the store counts as not answering.
TRIES = 8
WEEK_MS = 7 * 86_400_000
PRUNE_EVERY = 600.0
DIRS = ("entries", "anchors", "fences", "gone", "runs", "run_states", "replicas", "locks")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _alive(found: Znode, key: str, now: int) -> TypeGuard[tuple[bytes, Any]]:
    """Whether the znode's data[key] (ms) counted from its mtime has not yet passed."""
    return found is not None and found[1].mtime + int(loads(found[0]).get(key, 0)) > now


def _data(found: Znode) -> dict[str, Any]:
    return dict(loads(found[0])) if found is not None else {}


def _write(path: str, found: Znode, data: dict[str, Any]) -> Op:
    if found is None:
        return ("create", path, dumps(data))
    return ("set", path, dumps(data), found[1].version)


class ZooKeeperSlotStore(SlotStore):
    """Schedule state under ``zk.root`` of one ZooKeeper session."""

    down_text = "no quorum of the ZooKeeper ensemble reachable"
    up_text = "a quorum of the ZooKeeper ensemble answers"

    def __init__(self, zk: ZooKeeper) -> None:
        self.zk = zk
        self.name = zk.name
        self._lock = ZooKeeperLock(zk)
        self._ready = False
        self._fence_dirs: set[str] = set()
        self._mutex = threading.Lock()
        self.prune_every = PRUNE_EVERY
        """Seconds between two passes over one entry's fences past their retention."""
        self._pruned: dict[str, float] = {}

    @classmethod
    def from_config(cls, app: Celery, config: Config) -> ZooKeeperSlotStore:
        """The store on ``singleton_beat_zookeeper_hosts``; a request waits at most half a
        claim's TTL for the ensemble's answer."""
        return cls(
            ZooKeeper(config.zookeeper(), config.zookeeper_root(), wait=config.claim_ttl / 2)
        )

    def describe(self) -> str:
        return f"slot store -> {self.name} under {self.zk.root}"

    # -- paths and the read-decide-write loop ------------------------------------------

    def _path(self, kind: str, *names: str) -> str:
        return self.zk.path(kind, *(node_name(n) for n in names))

    def _fence(self, fence: Fence) -> str:
        return f"{self._path('fences', fence[0])}/{fence[1]}"

    def _prepare(self, entries: Sequence[str] = ()) -> None:
        if not self._ready:
            self.zk.ensure(self.zk.path("revision"), self.zk.path("document"),
                           *(self.zk.path(d) for d in DIRS))  # fmt: skip
            self._ready = True
        dirs = [self._path("fences", e) for e in entries]
        with self._mutex:
            missing = sorted(set(dirs) - self._fence_dirs)
        if missing:
            self.zk.ensure(*missing)
            with self._mutex:
                self._fence_dirs.update(missing)

    def _update(
        self,
        what: str,
        paths: Sequence[str],
        decide: Callable[[dict[str, Znode]], tuple[list[Op], Any]],
        *,
        clock: bool = False,
    ) -> Any:
        """Read ``paths``, let ``decide`` name the writes and the answer, write them in one
        transaction that fails if any znode changed since it was read; read again then."""
        unique = list(dict.fromkeys(paths))
        for _ in range(TRIES):
            found = dict(zip(unique, self.zk.read(what, unique, clock=clock), strict=True))
            ops, answer = decide(found)
            if not ops or self.zk.commit(what, partial(_apply, ops=ops)) is not None:
                return answer
        raise StoreUnavailable(self.name, what, f"its znodes changed under {TRIES} attempts")

    # -- entries and fences --------------------------------------------------------------

    def init(self, entries: Sequence[tuple[str, int | None]], now: int) -> list[EntryState]:
        self._prepare([name for name, _every in entries])
        paths = [self._path("entries", n) for n, _e in entries]
        anchors = [self._path("anchors", f"{n}:{e}") for n, e in entries if e is not None]

        def decide(found: dict[str, Znode]) -> tuple[list[Op], list[EntryState]]:
            ops: list[Op] = []
            states = []
            for (name, every), path in zip(entries, paths, strict=True):
                entry = found[path]
                last = loads(entry[0])["last"] if entry is not None else now
                if entry is None and path not in {op[1] for op in ops}:
                    ops.append(_write(path, None, {"last": now, "dispatched": 0, "skipped": 0}))
                anchor = None
                if every is not None:
                    at = self._path("anchors", f"{name}:{every}")
                    stored = found[at]
                    anchor = int(stored[0]) if stored is not None else now - now % every
                    if stored is None and at not in {op[1] for op in ops}:
                        ops.append(("create", at, str(anchor).encode()))
                states.append(EntryState(last, anchor))
            return ops, states

        return list(self._update("register the entries", paths + anchors, decide))

    def claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[Claim]:
        try:
            self._prepare([entry for entry, _slot in fences])
            answers: dict[Fence, Claim] = {}
            unique = list(dict.fromkeys(fences))
            for start in range(0, len(unique), CHUNK):
                answers.update(self._claim(unique[start : start + CHUNK], token, ttl, retention))
        except StoreUnavailable as exc:
            return [Claim(None, 0, {self.name: exc.detail}) for _ in fences]
        return [answers[fence] for fence in fences]

    def _claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> dict[Fence, Claim]:
        paths = [self._fence(f) for f in fences]
        entries = [self._path("entries", entry) for entry, _slot in fences]
        data = {"token": token, "ttl": _ms(ttl), "outcome": "", "kept": _ms(retention)}

        def decide(found: dict[str, Znode]) -> tuple[list[Op], dict[Fence, Claim]]:
            now = self.zk.now
            ops: list[Op] = []
            claims = {}
            for fence, path, entry_path in zip(fences, paths, entries, strict=True):
                entry = found[entry_path]
                last = int(loads(entry[0])["last"]) if entry is not None else 0
                held = found[path]
                record = loads(held[0]) if held is not None else {}
                if held is not None and not _alive(held, "kept", now):
                    record = {}  # past its retention: as if absent
                taken_over = False
                if record.get("outcome"):
                    claims[fence] = Claim(ClaimStatus.DONE, last)
                    continue
                if record and record["token"] != token:
                    if _alive(held, "ttl", now):
                        claims[fence] = Claim(ClaimStatus.HELD, last)
                        continue
                    taken_over = True
                ops.append(_write(path, held, data))
                claims[fence] = Claim(ClaimStatus.CLAIMED, last, taken_over=taken_over)
            return ops, claims

        answer: dict[Fence, Claim] = self._update(
            "claim slots", paths + entries, decide, clock=True
        )
        return answer

    def _ours(
        self, fences: Sequence[Fence], token: str, write: Callable[[str, Znode], Op]
    ) -> list[bool]:
        """For each fence, whether ``token`` holds its undecided claim; ``write`` those."""
        self._prepare([entry for entry, _slot in fences])
        paths = [self._fence(f) for f in fences]
        held: dict[str, bool] = {}
        for start in range(0, len(paths), CHUNK):
            held.update(
                self._update("update claims", paths[start : start + CHUNK], _holding(token, write))
            )
        return [held[path] for path in paths]

    def unclaim(self, fences: Sequence[Fence], token: str) -> None:
        with contextlib.suppress(StoreUnavailable):  # best effort: claims expire by their TTL
            self._ours(fences, token, lambda path, found: ("delete", path, _version(found)))

    def extend(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[bool]:
        data = {"token": token, "ttl": _ms(ttl), "outcome": "", "kept": _ms(retention)}
        try:
            return self._ours(fences, token, lambda path, found: _write(path, found, data))
        except StoreUnavailable:
            return [False for _ in fences]

    def finish(self, outcomes: Sequence[SlotOutcome], token: str, retention: float) -> list[bool]:
        outcomes = [SlotOutcome(*o) for o in outcomes]
        try:
            self._prepare([o.entry for o in outcomes])
            done: list[bool] = []
            for start in range(0, len(outcomes), CHUNK // 2):
                done += self._finish(outcomes[start : start + CHUNK // 2], token, retention)
        except StoreUnavailable:
            return [False for _ in outcomes]
        with contextlib.suppress(StoreUnavailable):  # the next pass deletes what this left
            self._prune([o.entry for o in outcomes], retention)
        return done

    def _prune(self, entries: Sequence[str], retention: float) -> None:
        """Delete an entry's fences kept past their retention (ZooKeeper keeps a znode until
        it is deleted), each entry at most every :attr:`prune_every` seconds per replica.

        Only slots older than the retention are read (their names are their times), and
        one is deleted only if its own ``mtime`` plus ``kept`` has passed on the ensemble's
        clock, at the version read."""
        at = time.monotonic()
        with self._mutex:
            due = [
                entry
                for entry in dict.fromkeys(entries)
                if entry not in self._pruned or at - self._pruned[entry] >= self.prune_every
            ]
            self._pruned.update(dict.fromkeys(due, at))
        for entry in due:
            folder = self._path("fences", entry)
            now = self.zk.server_now()
            old = [
                f"{folder}/{slot}"
                for slot in self.zk.children("list old fences", folder)
                if slot.lstrip("-").isdigit() and int(slot) + _ms(retention) < now
            ]
            for start in range(0, len(old), CHUNK):
                chunk = old[start : start + CHUNK]
                found = self.zk.read("read old fences", chunk, clock=True)
                gone = [
                    (path, znode[1].version)
                    for path, znode in zip(chunk, found, strict=True)
                    if znode is not None and not _alive(znode, "kept", self.zk.now)
                ]
                self.zk.batch("delete old fences", partial(_deletes, gone))

    def _finish(self, outcomes: Sequence[SlotOutcome], token: str, retention: float) -> list[bool]:
        fences = [self._fence((o.entry, o.slot)) for o in outcomes]
        entries = [self._path("entries", o.entry) for o in outcomes]

        def decide(found: dict[str, Znode]) -> tuple[list[Op], list[bool]]:
            ops: list[Op] = []
            states: dict[str, dict[str, Any]] = {}
            answers = []
            for outcome, path, entry_path in zip(outcomes, fences, entries, strict=True):
                record = _data(found[path])
                if record and (record["outcome"] or record["token"] != token):
                    answers.append(False)
                    continue
                if path in {op[1] for op in ops}:
                    answers.append(False)
                    continue
                kept = {"token": "", "ttl": 0, "outcome": str(outcome.outcome),
                        "kept": _ms(retention)}  # fmt: skip
                ops.append(_write(path, found[path], kept))
                entry = found[entry_path]
                state = states.setdefault(entry_path, loads(entry[0]) if entry else {
                    "last": outcome.slot, "dispatched": 0, "skipped": 0})  # fmt: skip
                state["last"] = max(int(state["last"]), outcome.slot)
                state["dispatched"] += outcome.sent
                state["skipped"] += outcome.skipped
                answers.append(True)
            ops += [_write(path, found[path], state) for path, state in states.items()]
            return ops, answers

        answer: list[bool] = self._update("finish slots", fences + entries, decide)
        return answer

    def outcomes(self, fences: Sequence[Fence]) -> list[str | None]:
        paths = [self._fence(fence) for fence in fences]
        found = self.zk.read("read slot outcomes", paths, clock=True)
        now = self.zk.now
        return [_data(z).get("outcome") or None if _alive(z, "kept", now) else None for z in found]

    def entry_counts(self, name: str) -> dict[str, int]:
        [entry] = self.zk.read("read an entry", [self._path("entries", name)])
        if entry is None:
            return {}
        state = loads(entry[0])
        return {key: int(state[key]) for key in ("last", "dispatched", "skipped")}

    # -- schedule changes ------------------------------------------------------------------

    def start_at(self, names: Sequence[str], slot: int) -> None:
        paths = [self._path("entries", n) for n in names]

        def decide(found: dict[str, Znode]) -> tuple[list[Op], None]:
            ops: list[Op] = []
            for path, entry in found.items():
                if entry is not None and int(loads(entry[0])["last"]) < slot:
                    ops.append(_write(path, entry, {**loads(entry[0]), "last": slot}))
            return ops, None

        self._update("raise the entries' last slots", paths, decide)

    def mark_gone(self, names: Sequence[str], now: int) -> None:
        self._prepare()
        paths = [self._path("gone", n) for n in names]

        def decide(found: dict[str, Znode]) -> tuple[list[Op], None]:
            return [_write(p, z, {"at": now}) for p, z in found.items()], None

        self._update("mark entries gone", paths, decide)

    def gone(self, names: Sequence[str]) -> list[int]:
        found = self.zk.read("read when entries left", [self._path("gone", n) for n in names])
        return [int(loads(z[0])["at"]) if z is not None else 0 for z in found]

    def anchors(self, entries: Sequence[tuple[str, int]]) -> list[int | None]:
        paths = [self._path("anchors", f"{name}:{every}") for name, every in entries]
        return [
            int(z[0]) if z is not None else None for z in self.zk.read("read the anchors", paths)
        ]

    # -- the runtime schedule ------------------------------------------------------------------

    def schedule_revision(self) -> int:
        self._prepare()
        [found] = self.zk.read("read the schedule's revision", [self.zk.path("revision")])
        return int(found[0] or 0) if found is not None else 0

    def read_schedule(self) -> StoredSchedule:
        self._prepare()
        [found] = self.zk.read("read the schedule", [self.zk.path("document")])
        stored = loads(found[0]) if found is not None else {}
        return StoredSchedule(int(stored.get("revision", 0)), dict(stored.get("doc", {})))

    def write_schedule(self, revision: int, doc: dict[str, Any]) -> bool:
        self._prepare()
        paths = [self.zk.path("revision"), self.zk.path("document")]

        def decide(found: dict[str, Znode]) -> tuple[list[Op], bool]:
            stored = found[paths[0]]
            if stored is not None and int(stored[0] or 0) >= revision:
                return [], False
            number = str(revision).encode()
            written: Op = ("create", paths[0], number)
            if stored is not None:
                written = ("set", paths[0], number, stored[1].version)
            return [
                written,
                _write(paths[1], found[paths[1]], {"revision": revision, "doc": doc}),
            ], True

        answer: bool = self._update("write the schedule", paths, decide)
        return answer

    def mark_runs_sent(self, run_ids: Sequence[str], retention: float) -> None:
        self._prepare()
        paths = [self._path("runs", r) for r in run_ids]

        def decide(found: dict[str, Znode]) -> tuple[list[Op], None]:
            return [_write(p, z, {"kept": _ms(retention)}) for p, z in found.items()], None

        self._update("mark runs sent", paths, decide)

    def runs_sent(self, run_ids: Sequence[str]) -> set[str]:
        found = self.zk.read(
            "read the runs sent", [self._path("runs", r) for r in run_ids], clock=True
        )
        return {r for r, z in zip(run_ids, found, strict=True) if _alive(z, "kept", self.zk.now)}

    # -- run states --------------------------------------------------------------------------

    def run_states(self, entries: Sequence[str]) -> dict[str, dict[str, int]]:
        paths = [self._path("run_states", e) for e in entries]
        found = self.zk.read("read the run states", paths, clock=True)
        states = {}
        for entry, znode in zip(entries, found, strict=True):
            live = loads(znode[0]) if _alive(znode, "kept", self.zk.now) else {}
            states[entry] = {field: int(live.get(field, 0)) for field in RUN_STATE_FIELDS}
        return states

    def _raise(self, what: str, changes: dict[str, Callable[[dict[str, Any], int], None]]) -> None:
        self._prepare()
        paths = {self._path("run_states", e): change for e, change in changes.items()}

        def decide(found: dict[str, Znode]) -> tuple[list[Op], None]:
            ops = []
            for path, change in paths.items():
                znode = found[path]
                state, left = {}, 0
                if _alive(znode, "kept", self.zk.now):
                    state = loads(znode[0])
                    left = znode[1].mtime + int(state["kept"]) - self.zk.now
                change(state, left)
                ops.append(_write(path, znode, state))
            return ops, None

        self._update(what, list(paths), decide, clock=True)

    def raise_run_states(self, writes: Sequence[tuple[str, str, int]], retention: float) -> None:
        grouped: dict[str, list[tuple[str, int]]] = {}
        for entry, field, slot in writes:
            grouped.setdefault(entry, []).append((field, slot))

        def raising(fields: list[tuple[str, int]]) -> Callable[[dict[str, Any], int], None]:
            def change(state: dict[str, Any], left: int) -> None:
                for field, slot in fields:
                    state[field] = max(int(state.get(field, 0)), slot)
                state["kept"] = _ms(retention)

            return change

        self._raise("raise the run states", {e: raising(f) for e, f in grouped.items()})

    def count_overlapped(self, entry: str, count: int) -> None:
        def change(state: dict[str, Any], left: int) -> None:
            state["overlapped"] = int(state.get("overlapped", 0)) + count
            state["kept"] = max(left, WEEK_MS)

        self._raise("count overlapped slots", {entry: change})

    # -- replicas --------------------------------------------------------------------------

    def heartbeat(self, replica: str, info: dict[str, Any], ttl: float) -> int:
        self._prepare()
        path = self._path("replicas", replica)
        data = dumps({"info": info, "ttl": _ms(ttl)})
        [written, revision] = self.zk.batch(
            "write a heartbeat",
            lambda c: [c.set_async(path, data), c.get_async(self.zk.path("revision"))],
        )
        if isinstance(written, Exception):
            [made] = self.zk.batch(
                "write a heartbeat", lambda c: [c.create_async(path, data, ephemeral=True)]
            )
            if isinstance(made, Exception) and type(made).__name__ != "NodeExistsError":
                raise self.zk.unavailable("write a heartbeat", made)
        if not isinstance(revision, Exception):
            self.saw_schedule_revision(int(revision[0] or 0))
        return len(self._live())

    def _live(self) -> list[dict[str, Any]]:
        names = self.zk.children("list the replicas", self.zk.path("replicas"))
        paths = [self.zk.path("replicas", n) for n in names]
        found = self.zk.read("read the replicas", paths, clock=True)
        now = self.zk.now
        return [
            {**loads(z[0])["info"], "seen_ago": (now - z[1].mtime) / 1000}
            for z in found
            if _alive(z, "ttl", now)
        ]

    def replicas(self) -> list[dict[str, Any]]:
        self._prepare()
        return sorted(self._live(), key=lambda r: (r["host"], r["pid"]))

    def forget_replica(self, replica: str) -> None:
        path = self._path("replicas", replica)
        with contextlib.suppress(StoreUnavailable):  # best effort: it goes with the session
            self.zk.batch("delete a heartbeat", lambda c: [c.delete_async(path)])

    def leader_lock(self, owner: str) -> LockBackend:
        return self._lock

    def close(self) -> None:
        self.zk.close()


def _version(found: Znode) -> int:
    return found[1].version if found is not None else -1


def _holding(
    token: str, write: Callable[[str, Znode], Op]
) -> Callable[[dict[str, Znode]], tuple[list[Op], dict[str, bool]]]:
    """Decides, for the fences read, which ``token`` holds undecided, writing those."""

    def decide(found: dict[str, Znode]) -> tuple[list[Op], dict[str, bool]]:
        ops: list[Op] = []
        ours = {}
        for path, znode in found.items():
            record = loads(znode[0]) if znode is not None else {}
            ours[path] = bool(record) and not record["outcome"] and record["token"] == token
            if ours[path]:
                ops.append(write(path, znode))
        return ops, ours

    return decide


def _deletes(gone: Sequence[tuple[str, int]], client: Any) -> Iterator[Any]:
    """The deletes of ``gone``, made one by one as the batch sends them."""
    return (client.delete_async(path, version) for path, version in gone)


def _apply(transaction: Any, *, ops: Sequence[Op]) -> None:
    for op in ops:
        if op[0] == "create":
            transaction.create(op[1], op[2])
        elif op[0] == "set":
            transaction.set_data(op[1], op[2], version=op[3])
        else:
            transaction.delete(op[1], version=op[2])

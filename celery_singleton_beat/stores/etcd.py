"""The slot store on etcd: ``singleton_beat_store = "etcd"``.

For teams that run etcd beside their platform: every write is a transaction agreed by a
majority of the members (linearizable), and every expiry is an etcd *lease*, which ends on
the leader's clock. No replica's clock decides who holds a slot or who is alive.

A slot's fence is three keys (``Keys.slot``, ``slot_claim``, ``slot_done``)::

    fire:e:s        the last claimant's token   lease: the fence retention (shared)
    fire:e:s:claim  the live claimant's token   lease: the claim TTL (one per batch)
    fire:e:s:done   the outcome                 lease: the fence retention (shared)

A claim puts both of the first two where ``:claim`` is absent (or ours) and ``:done`` is
absent, in one transaction; when ``:claim`` has expired (its lease ended) but ``fire:e:s``
still names another token, the claim is a *take-over*. Finishing deletes both and puts
``:done``. A batch of claims is one transaction of nested transactions (one per slot),
split only where etcd's limit on operations per transaction (128) requires.

Each entry's progress, anchors, the runtime schedule and the run states are written with
read-compare-write transactions: a write counts only if the keys it read are unchanged
(their ``mod_revision``), else it reads again.

etcd grants leases in whole seconds: a TTL is rounded up (a claim is held a little longer
than asked, never shorter) and a key ends within about half a second after its lease does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from celery_singleton_beat.connections.etcd import (
    Etcd,
    EtcdError,
    Json,
    absent,
    delete,
    get,
    kvs_of,
    nested,
    put,
    unb64,
    unchanged,
    value_is,
)
from celery_singleton_beat.core.schema import DEFAULT_PREFIX, RUN_STATE_FIELDS, ClaimStatus, Keys
from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.locks.base import LockBackend
from celery_singleton_beat.locks.etcd import EtcdLock, etcd_client
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

__all__ = ["EtcdSlotStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Slots per transaction: etcd refuses more than 128 operations at one level by default.
BATCH = 40
#: Read-compare-write attempts before a write gives up (another replica kept winning).
ATTEMPTS = 50
#: Longest time (s) one lease is shared by the writes kept for one retention.
KEPT_REUSE = 60.0
#: How long a count of held-back slots is kept after its last write (as on Redis).
OVERLAP_RETENTION = 7 * 86400.0


def _chunks(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _wrote(reply: Json) -> bool:
    """Whether a (nested) transaction took the branch that writes."""
    for response in reply.get("responses", []):
        if "response_put" in response:
            return True
        if "response_txn" in response and _wrote(response["response_txn"]):
            return True
    return False


class _Record:
    """A key as read: its value (None: absent) and the revision it was written at."""

    def __init__(self, kvs: list[Json]) -> None:
        self.value = unb64(kvs[0].get("value", "")) if kvs else None
        self.mod_revision = int(kvs[0].get("mod_revision", 0)) if kvs else 0
        self.lease = int(kvs[0].get("lease", 0)) if kvs else 0

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.value)) if self.value else {}


class EtcdSlotStore(SlotStore):
    """Schedule state on the etcd cluster of ``client``, under ``prefix``."""

    def __init__(self, client: Etcd, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.name = client.name
        self.down_text = "no etcd member with a majority behind it answers"
        self.up_text = "an etcd member with a majority behind it answers"
        self._mutex = threading.Lock()
        self._kept_leases: dict[float, tuple[int, float]] = {}
        """Each retention's shared lease: its id, and when it was asked for (monotonic)."""

    @classmethod
    def from_config(cls, app: Celery, config: Config) -> EtcdSlotStore:
        """The store on the members of ``singleton_beat_etcd_endpoints``."""
        return cls(etcd_client(config), config.key_prefix)

    def describe(self) -> str:
        return f"slot store -> {self.name}"

    def close(self) -> None:
        self.client.close()

    def leader_lock(self, owner: str) -> LockBackend:
        return EtcdLock(self.client, self.keys.prefix, owner=owner, owns_client=False)

    # -- reading and writing ----------------------------------------------------------------

    def _read(self, keys: Sequence[str]) -> list[_Record]:
        """The records of ``keys``, in one round trip per hundred (each hundred read at one
        revision; :meth:`_update` compares every key it read when it writes)."""
        found: list[_Record] = []
        for chunk in _chunks(keys, 100):
            reply = self.client.txn([], [get(key) for key in chunk], [])
            found += [_Record(kvs_of(r)) for r in reply.get("responses", [])]
        return found

    def _update(
        self, keys: Sequence[str], change: Callable[[list[_Record]], tuple[list[Json], T]]
    ) -> T:
        """Read ``keys``, let ``change`` give the writes and the answer, and write them if
        none of the keys changed meanwhile; else read again."""
        for _ in range(ATTEMPTS):
            records = self._read(keys)
            writes, answer = change(records)
            if not writes:
                return answer
            compare = [unchanged(k, r.mod_revision) for k, r in zip(keys, records, strict=True)]
            if self.client.txn(compare, writes, []).get("succeeded", False):
                return answer
        raise StoreUnavailable(self.name, "write", f"{ATTEMPTS} writers raced for the same keys")

    def _lease(self, ttl: float) -> int:
        return self.client.grant(ttl)

    def _kept(self, retention: float) -> int:
        """A lease that ends at least ``retention`` seconds from now, shared by the writes of
        the next few seconds (a fence kept for a day should not cost a lease a claim):
        granted for ``retention`` plus the time it is handed out, as this process's
        monotonic clock counts it from before the grant."""
        window = min(KEPT_REUSE, retention / 10)
        now = time.monotonic()
        with self._mutex:
            found = self._kept_leases.get(retention)
            if found is not None and now - found[1] <= window:
                return found[0]
        lease = self.client.grant(retention + window)
        with self._mutex:
            self._kept_leases[retention] = (lease, now)
        return lease

    # -- entries ------------------------------------------------------------------------------

    def init(self, entries: Sequence[tuple[str, int | None]], now: int) -> list[EntryState]:
        found: list[EntryState] = []
        for chunk in _chunks(entries):
            found += self._init(chunk, now)
        return found

    def _init(self, entries: Sequence[tuple[str, int | None]], now: int) -> list[EntryState]:
        keys = [self.keys.entry(name) for name, _ in entries]
        anchor_keys = [
            self.keys.anchor(name, every) for name, every in entries if every is not None
        ]

        def change(records: list[_Record]) -> tuple[list[Json], list[EntryState]]:
            writes, states = [], []
            anchors = iter(records[len(entries) :])
            for (name, every), key, record in zip(entries, keys, records, strict=False):
                state = record.json()
                if "last" not in state:
                    state["last"] = now
                    writes.append(put(key, json.dumps(state)))
                anchor = None
                if every is not None:
                    stored = next(anchors)
                    if stored.value is None:
                        anchor = now - now % every
                        writes.append(put(self.keys.anchor(name, every), str(anchor)))
                    else:
                        anchor = int(stored.value)
                states.append(EntryState(int(state["last"]), anchor))
            return writes, states

        return self._update([*keys, *anchor_keys], change)

    def entry_counts(self, name: str) -> dict[str, int]:
        state = self._read([self.keys.entry(name)])[0].json()
        if "last" not in state:
            return {}
        return {field: int(state.get(field, 0)) for field in ("last", "dispatched", "skipped")}

    def start_at(self, names: Sequence[str], slot: int) -> None:
        for chunk in _chunks(names):
            keys = [self.keys.entry(name) for name in chunk]

            def change(records: list[_Record], keys: list[str] = keys) -> tuple[list[Json], None]:
                writes = []
                for key, record in zip(keys, records, strict=True):
                    state = record.json()
                    if "last" in state and state["last"] < slot:
                        writes.append(put(key, json.dumps({**state, "last": slot})))
                return writes, None

            self._update(keys, change)

    def mark_gone(self, names: Sequence[str], now: int) -> None:
        for chunk in _chunks(names):
            keys = [self.keys.entry(name) for name in chunk]

            def change(records: list[_Record], keys: list[str] = keys) -> tuple[list[Json], None]:
                return [
                    put(key, json.dumps({**record.json(), "gone": now}))
                    for key, record in zip(keys, records, strict=True)
                ], None

            self._update(keys, change)

    def gone(self, names: Sequence[str]) -> list[int]:
        records = self._read([self.keys.entry(name) for name in names])
        return [int(record.json().get("gone", 0)) for record in records]

    def anchors(self, entries: Sequence[tuple[str, int]]) -> list[int | None]:
        records = self._read([self.keys.anchor(name, every) for name, every in entries])
        return [None if r.value is None else int(r.value) for r in records]

    # -- fences -------------------------------------------------------------------------------

    def claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[Claim]:
        try:
            claim_lease, kept_lease = self._lease(ttl), self._kept(retention)
            found: list[Claim] = []
            for chunk in _chunks(fences):
                found += self._claim(chunk, token, claim_lease, kept_lease)
        except StoreUnavailable as exc:
            errors = getattr(exc, "errors", None) or {self.name: exc.detail}
            return [Claim(None, 0, errors) for _ in fences]
        return found

    def _claim(
        self, fences: Sequence[Fence], token: str, claim_lease: int, kept_lease: int
    ) -> list[Claim]:
        entries = sorted({entry for entry, _ in fences})
        ops = [get(self.keys.entry(entry)) for entry in entries]
        for entry, slot in fences:
            fence = self.keys.slot(entry, slot)
            live = self.keys.slot_claim(entry, slot)
            writes = [put(live, token, claim_lease), put(fence, token, kept_lease)]
            again = nested([value_is(live, token)], writes, [])
            free = nested([absent(live)], [get(fence), *writes], [again])
            ops.append(nested([absent(self.keys.slot_done(entry, slot))], [free], []))
        reply = self.client.txn([], ops, [])
        responses = reply["responses"]
        lasts = {
            entry: int(_Record(kvs_of(r)).json().get("last", 0))
            for entry, r in zip(entries, responses, strict=False)
        }
        found = []
        for (entry, _), response in zip(fences, responses[len(entries) :], strict=True):
            found.append(self._claimed(response["response_txn"], token, lasts[entry]))
        return found

    @staticmethod
    def _claimed(reply: Json, token: str, last: int) -> Claim:
        if not reply.get("succeeded", False):
            return Claim(ClaimStatus.DONE, last)
        free = reply["responses"][0]["response_txn"]
        if free.get("succeeded", False):
            before = _Record(kvs_of(free["responses"][0])).value
            return Claim(ClaimStatus.CLAIMED, last, taken_over=before not in (None, token))
        if free["responses"][0]["response_txn"].get("succeeded", False):
            return Claim(ClaimStatus.CLAIMED, last)
        return Claim(ClaimStatus.HELD, last)

    def unclaim(self, fences: Sequence[Fence], token: str) -> None:
        try:
            for chunk in _chunks(fences):
                ops = []
                for entry, slot in chunk:
                    live = self.keys.slot_claim(entry, slot)
                    gone = [delete(live), delete(self.keys.slot(entry, slot))]
                    ops.append(nested([value_is(live, token)], gone, []))
                self.client.txn([], ops, [])
        except StoreUnavailable as exc:
            logger.debug("singleton beat: claims not given back: %s", exc)

    def extend(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[bool]:
        if not fences:
            return []
        try:
            claim_lease, kept_lease = self._lease(ttl), self._kept(retention)
            held: list[bool] = []
            for chunk in _chunks(fences):
                ops = []
                for entry, slot in chunk:
                    live = self.keys.slot_claim(entry, slot)
                    fence = self.keys.slot(entry, slot)
                    writes = [put(live, token, claim_lease), put(fence, token, kept_lease)]
                    ops.append(nested([value_is(live, token)], writes, []))
                reply = self.client.txn([], ops, [])
                held += [_wrote(r["response_txn"]) for r in reply["responses"]]
        except StoreUnavailable:
            return [False] * len(fences)
        return held

    def finish(self, outcomes: Sequence[SlotOutcome], token: str, retention: float) -> list[bool]:
        try:
            kept_lease = self._kept(retention)
            done: list[bool] = []
            for chunk in _chunks([SlotOutcome(*o) for o in outcomes], 20):
                done += self._finish(chunk, token, kept_lease)
        except StoreUnavailable:
            return [False] * len(outcomes)
        return done

    def _finish(self, outcomes: Sequence[SlotOutcome], token: str, kept: int) -> list[bool]:
        """One read-compare-write: a fence is ours when it is not decided and names our
        token (or nobody: its claim was lost with the store)."""
        entries = sorted({o.entry for o in outcomes})
        keys = [self.keys.entry(entry) for entry in entries]
        for o in outcomes:
            keys += [self.keys.slot(o.entry, o.slot), self.keys.slot_done(o.entry, o.slot)]

        def change(records: list[_Record]) -> tuple[list[Json], list[bool]]:
            states = {e: r.json() for e, r in zip(entries, records, strict=False)}
            slots = records[len(entries) :]
            writes: list[Json] = []
            ours = []
            for n, o in enumerate(outcomes):
                fence, decided = slots[2 * n], slots[2 * n + 1]
                mine = decided.value is None and fence.value in (None, token)
                ours.append(mine)
                if not mine:
                    continue
                writes += [
                    put(self.keys.slot_done(o.entry, o.slot), str(o.outcome), kept),
                    delete(self.keys.slot(o.entry, o.slot)),
                    delete(self.keys.slot_claim(o.entry, o.slot)),
                ]
                state = states[o.entry]
                state["last"] = max(int(state.get("last", o.slot)), o.slot)
                state["dispatched"] = int(state.get("dispatched", 0)) + o.sent
                state["skipped"] = int(state.get("skipped", 0)) + o.skipped
            for entry, key in zip(entries, keys, strict=False):
                if any(mine and o.entry == entry for mine, o in zip(ours, outcomes, strict=True)):
                    writes.append(put(key, json.dumps(states[entry])))
            return writes, ours

        return self._update(keys, change)

    # -- the runtime schedule -----------------------------------------------------------------

    def outcomes(self, fences: Sequence[Fence]) -> list[str | None]:
        records = self._read([self.keys.slot_done(entry, slot) for entry, slot in fences])
        return [record.value or None for record in records]

    def schedule_revision(self) -> int:
        record = self._read([self.keys.schedule_rev])[0]
        return int(record.value or 0)

    def read_schedule(self) -> StoredSchedule:
        revision, doc = self._read([self.keys.schedule_rev, self.keys.schedule_doc])
        return StoredSchedule(int(revision.value or 0), doc.json())

    def write_schedule(self, revision: int, doc: dict[str, Any]) -> bool:
        text = json.dumps(doc)

        def change(records: list[_Record]) -> tuple[list[Json], bool]:
            if int(records[0].value or 0) >= revision:
                return [], False
            writes = [put(self.keys.schedule_rev, str(revision))]
            return [*writes, put(self.keys.schedule_doc, text)], True

        return self._update([self.keys.schedule_rev], change)

    def mark_runs_sent(self, run_ids: Sequence[str], retention: float) -> None:
        if not run_ids:
            return
        kept = self._kept(retention)
        for chunk in _chunks(run_ids, 100):
            self.client.txn([], [put(self.keys.run_sent(r), "1", kept) for r in chunk], [])

    def runs_sent(self, run_ids: Sequence[str]) -> set[str]:
        records = self._read([self.keys.run_sent(r) for r in run_ids])
        return {r for r, record in zip(run_ids, records, strict=True) if record.value}

    # -- run states ---------------------------------------------------------------------------

    def run_states(self, entries: Sequence[str]) -> dict[str, dict[str, int]]:
        records = self._read([self.keys.run_state(entry) for entry in entries])
        return {
            entry: {field: int(record.json().get(field, 0)) for field in RUN_STATE_FIELDS}
            for entry, record in zip(entries, records, strict=True)
        }

    def raise_run_states(self, writes: Sequence[tuple[str, str, int]], retention: float) -> None:
        if not writes:
            return
        kept = self._kept(retention)
        for entries in _chunks(sorted({entry for entry, _, _ in writes})):
            chunk = set(entries)
            self._raise_run_states(entries, [w for w in writes if w[0] in chunk], kept)

    def _raise_run_states(
        self, entries: Sequence[str], writes: Sequence[tuple[str, str, int]], kept: int
    ) -> None:
        keys = [self.keys.run_state(entry) for entry in entries]

        def change(records: list[_Record]) -> tuple[list[Json], None]:
            states = {e: r.json() for e, r in zip(entries, records, strict=True)}
            for entry, field, slot in writes:
                states[entry][field] = max(int(states[entry].get(field, 0)), slot)
            pairs = zip(entries, keys, strict=True)
            return [put(key, json.dumps(states[entry]), kept) for entry, key in pairs], None

        self._update(keys, change)

    def count_overlapped(self, entry: str, count: int) -> None:
        key = self.keys.run_state(entry)
        kept = self._kept(OVERLAP_RETENTION)

        def change(records: list[_Record]) -> tuple[list[Json], None]:
            state = records[0].json()
            state["overlapped"] = int(state.get("overlapped", 0)) + count
            return [put(key, json.dumps(state), kept)], None

        self._update([key], change)

    # -- replicas -----------------------------------------------------------------------------

    def heartbeat(self, replica: str, info: dict[str, Any], ttl: float) -> int:
        lease = self._lease(ttl)
        ops = [
            put(self.keys.replica(replica), json.dumps(info), lease),
            get(self.keys.schedule_rev),
            {"request_range": {**get(self.keys.replica_prefix, prefix=True)["request_range"],
                               "count_only": True}},
        ]  # fmt: skip
        reply = self.client.txn([], ops, [])
        responses = reply["responses"]
        self.saw_schedule_revision(int(_Record(kvs_of(responses[1])).value or 0))
        return int(responses[2]["response_range"].get("count", 0))

    def replicas(self) -> list[dict[str, Any]]:
        reply = self.client.txn([], [get(self.keys.replica_prefix, prefix=True)], [])
        found = []
        for record in kvs_of(reply["responses"][0]):
            info = dict(json.loads(unb64(record["value"])))
            info["seen_ago"] = self._seen_ago(int(record.get("lease", 0)))
            if info["seen_ago"] is not None and info["seen_ago"] >= 0:
                found.append(info)
        return sorted(found, key=lambda r: (r["host"], r["pid"]))

    def _seen_ago(self, lease: int) -> float | None:
        """Seconds since the heartbeat's lease was granted, on the leader's clock (whole
        seconds: etcd counts a lease's time so); -1 when the lease has just ended."""
        if not lease:
            return None
        reply = self.client.call("lease/timetolive", {"ID": lease})
        left, granted = int(reply.get("TTL", -1)), int(reply.get("grantedTTL", 0))
        return -1.0 if left < 0 else float(max(0, granted - left - 1))

    def forget_replica(self, replica: str) -> None:
        try:
            self.client.txn([], [delete(self.keys.replica(replica))], [])
        except EtcdError as exc:
            logger.debug("singleton beat: heartbeat not dropped: %s", exc)

"""The slot store on a majority of Redis masters (or on a Redis Cluster): today's default,
and the fastest.

Keys (under the configured prefix, see :mod:`celery_singleton_beat.core.schema`):

- ``entry:{name}`` — hash: ``last`` (the newest slot handled, ms), ``dispatched`` and
  ``skipped`` counts. Written to every reachable master as "set if greater"; read as the
  maximum over the masters that know the entry, so any replica continues where another
  stopped. A master that restarted empty does not know the entry and has no vote.
- ``anchor:{name}:{every_ms}`` — the anchor of an interval entry's slots, set once.
- ``fire:{name}:{slot}`` — the fence of one slot: ``{token}|{expiry}`` while a replica
  holds the claim (the expiry on the master's own clock, in ms), then ``done:{outcome}``.
  Both are kept for the fence retention, so a claim that expired is still seen: whoever
  takes it over knows the slot may already have been sent and sends it again with the
  same task id rather than counting it as missed::

      replica A: claim fire:e:t ── publish ── (SIGKILL before done)
      replica B: claim fire:e:t held ... (A's claim expires) ... taken over ── publish again
                 (same task id uuid5(e, t): the worker drops a second copy)

- ``replica:{host}:{pid}`` — a replica's heartbeat (JSON, with a TTL).

Each operation is one script per entry, pipelined for all entries and sent to all masters
in one round trip. On a Redis Cluster the keys carry hash tags (an entry's keys and its
slots' share the entry's, see :mod:`~celery_singleton_beat.core.schema`), so that each
script touches one hash slot, and the batch is split over the shards in the same round
trip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery_singleton_beat.connections.masters import Masters, describe
from celery_singleton_beat.connections.resp import bulk, evalsha_head
from celery_singleton_beat.core.schema import RUN_STATE_FIELDS, ClaimStatus, Keys
from celery_singleton_beat.errors import QuorumUnavailable, StoreUnavailable
from celery_singleton_beat.locks.base import LockBackend
from celery_singleton_beat.locks.redlock import Redlock
from celery_singleton_beat.settings.urls import MasterURL
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

# what the CLAIM script answers for one fence on one master (in the low two bits)
TAKEN_OVER = 3
DONE = 2
CLAIMED = 1
HELD = 0
#: How a decided fence's value starts (``done:{outcome}``).
DONE_MARK = "done:"

#: The master's clock in ms, inside a script (Redis 5+ replicates a script's effects, so
#: reading TIME before writing is allowed).
_SERVER_MS = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


class RedisSlotStore(SlotStore):
    """The shared schedule state on a majority of Redis masters."""

    down_text = "no majority of Redis masters reachable"
    up_text = "a majority of Redis masters answers"

    # KEYS[1] fence, KEYS[2] entry hash; ARGV[1] claim token, ARGV[2] claim ttl in ms,
    # ARGV[3] retention ms -> entry's last slot * 4 + (DONE | CLAIMED | HELD | TAKEN_OVER):
    # one integer, cheap to parse
    CLAIM = (
        """
    local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0') * 4
    local fence = redis.call('GET', KEYS[1])
    local status = 1
    """
        + _SERVER_MS
        + """
    if fence then
        if string.sub(fence, 1, 5) == 'done:' then return last + 2 end
        local bar = string.find(fence, '|', 1, true)
        local expiry = bar and tonumber(string.sub(fence, bar + 1)) or 0
        local holder = bar and string.sub(fence, 1, bar - 1) or fence
        if holder ~= ARGV[1] then
            if expiry > now then return last end
            status = 3
        end
    end
    local claim = ARGV[1] .. '|' .. string.format('%.0f', now + tonumber(ARGV[2]))
    redis.call('SET', KEYS[1], claim, 'PX', ARGV[3])
    return last + status
    """
    )

    # KEYS[1] fence; ARGV[1] claim token -> 1 when our claim was removed
    UNCLAIM = """
    local fence = redis.call('GET', KEYS[1])
    if fence and string.sub(fence, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
        return redis.call('DEL', KEYS[1])
    end
    return 0
    """

    # KEYS[1] fence; ARGV[1] claim token, ARGV[2] claim ttl ms, ARGV[3] retention ms
    # -> 1 when our claim was extended, 0 when it is not ours any more
    EXTEND = (
        """
    local fence = redis.call('GET', KEYS[1])
    if not fence or string.sub(fence, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then return 0 end
    """
        + _SERVER_MS
        + """
    local claim = ARGV[1] .. '|' .. string.format('%.0f', now + tonumber(ARGV[2]))
    redis.call('SET', KEYS[1], claim, 'PX', ARGV[3])
    return 1
    """
    )

    # KEYS[1] fence, KEYS[2] entry hash; ARGV[1] outcome, ARGV[2] retention ms,
    # ARGV[3] slot ms, ARGV[4] dispatched, ARGV[5] skipped, ARGV[6] claim token
    # -> 1 when marked done, 0 when the fence is done already or another replica's claim
    FINISH = """
    local fence = redis.call('GET', KEYS[1])
    if fence and (string.sub(fence, 1, 5) == 'done:'
                  or string.sub(fence, 1, #ARGV[6] + 1) ~= ARGV[6] .. '|') then
        return 0
    end
    redis.call('SET', KEYS[1], 'done:' .. ARGV[1], 'PX', ARGV[2])
    local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
    if tonumber(ARGV[3]) > last then redis.call('HSET', KEYS[2], 'last', ARGV[3]) end
    redis.call('HINCRBY', KEYS[2], 'dispatched', ARGV[4])
    redis.call('HINCRBY', KEYS[2], 'skipped', ARGV[5])
    return 1
    """

    # KEYS[1] entry hash, KEYS[2] anchor key (interval entries); ARGV[1] anchor proposal
    # or '' -> {last or '' when this master does not know the entry, anchor or ''}
    INIT = """
    local anchor = ''
    if ARGV[1] ~= '' then
        redis.call('SET', KEYS[2], ARGV[1], 'NX')
        anchor = redis.call('GET', KEYS[2])
    end
    return {redis.call('HGET', KEYS[1], 'last') or '', anchor}
    """

    # KEYS[1] entry hash; ARGV[1] slot ms -> the entry's last slot after raising it to at
    # least ARGV[1] (a new entry starts there; a master that lost it learns it back)
    RAISE_LAST = """
    local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1')
    if tonumber(ARGV[1]) > last then
        redis.call('HSET', KEYS[1], 'last', ARGV[1])
        return ARGV[1]
    end
    return redis.call('HGET', KEYS[1], 'last')
    """

    # KEYS[1] anchor key; ARGV[1] anchor -> 1 (lowers a divergent anchor to the agreed one)
    LOWER_ANCHOR = """
    local current = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
    if tonumber(ARGV[1]) <= current then redis.call('SET', KEYS[1], ARGV[1]) end
    return 1
    """

    def __init__(self, masters: Masters, prefix: str) -> None:
        self.masters = masters
        self.prefix = prefix
        self.keys = Keys(prefix, hash_tags=masters.clustered)
        self.name = f"{len(masters.nodes)} Redis master(s)"
        if len(masters.nodes) == 1 and masters.clustered:
            self.name = "a Redis Cluster"
            self.down_text = "the Redis Cluster does not answer (or is down)"
            self.up_text = "the Redis Cluster answers"
        self._claim = masters.script(self.CLAIM)
        self._unclaim = masters.script(self.UNCLAIM)
        self._extend = masters.script(self.EXTEND)
        self._finish = masters.script(self.FINISH)
        self._init = masters.script(self.INIT)
        self._raise = masters.script(self.RAISE_LAST)
        self._lower = masters.script(self.LOWER_ANCHOR)

    @classmethod
    def from_config(cls, app: Celery, config: Config) -> RedisSlotStore:
        """The store on the masters of ``singleton_beat_redis_urls``."""
        masters = Masters.from_urls(
            config.redis_urls, config.node_timeout, options=config.redis_options(),
            min_replicas=config.redis_min_replicas,
        )  # fmt: skip
        return cls(masters, config.key_prefix)

    def entry_key(self, name: str) -> str:
        return self.keys.entry(name)

    def fence_key(self, name: str, slot: int) -> str:
        return self.keys.slot(name, slot)

    def anchor_key(self, name: str, every_ms: int) -> str:
        return self.keys.anchor(name, every_ms)

    def replica_key(self, replica: str) -> str:
        return self.keys.replica(replica)

    def describe(self) -> str:
        masters = ", ".join(node.label for node in self.masters.nodes)
        if len(self.masters.nodes) == 1 and self.masters.clustered:
            return f"lock store -> {masters}"
        return (
            f"lock masters -> {masters} "
            f"(majority {self.masters.quorum} of {len(self.masters.nodes)})"
        )

    def servers(self) -> list[MasterURL]:
        return [node.master for node in self.masters.nodes]

    def unavailable(self, what: str, errors: dict[str, str]) -> StoreUnavailable:
        return QuorumUnavailable(what, self.masters.quorum, len(self.masters.nodes), errors)

    def leader_lock(self, owner: str) -> LockBackend:
        return Redlock(self.masters, prefix=self.prefix, owner=owner)

    def close(self) -> None:
        self.masters.close()

    def init(self, entries: Sequence[tuple[str, int | None]], now: int) -> list[EntryState]:
        """Register entries (name, interval in ms or None): their last slot and anchor.

        The last slot is the maximum over the masters that know the entry; a master that
        restarted empty does not vote, and learns the value back. Only an entry that no
        answering master knows is new: it starts at ``now``, and slots before its first
        sighting never fire. An interval entry's anchor is proposed as ``now`` rounded
        down to a whole interval, so replicas starting together propose the same one; the
        smallest stored wins.
        """
        commands = [
            (
                "EVALSHA",
                self._init,
                2,
                self.entry_key(name),
                self.anchor_key(name, every or 0),
                "" if every is None else now - now % every,
            )
            for name, every in entries
        ]
        answers = self._majority("init", commands, durable=True)
        results: list[EntryState] = []
        repairs = []
        for index, (name, every) in enumerate(entries):
            known = [int(a[index][0]) for a in answers if a[index][0]]
            last = max(known, default=now)
            if len(known) < len(self.masters.nodes) or min(known) != last:
                repairs.append(("EVALSHA", self._raise, 1, self.entry_key(name), last))
            anchor = None
            if every is not None:
                anchors = [int(a[index][1]) for a in answers if a[index][1]]
                anchor = min(anchors)
                if max(anchors) != anchor:
                    repairs.append(
                        ("EVALSHA", self._lower, 1, self.anchor_key(name, every), anchor)
                    )
            results.append(EntryState(last, anchor))
        if repairs:
            self.masters.broadcast(repairs, durable=True)
        return results

    def claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[Claim]:
        """Try to claim each (entry, slot) fence on a majority, in one round trip."""
        ttl_ms = max(1, int(ttl * 1000))
        retention_ms = int(retention * 1000)
        # a chunk holds hundreds of slots: what repeats is encoded once (see evalsha_head)
        head = evalsha_head(self._claim, 2, 3)
        tail = b"".join([bulk(token.encode()), bulk(b"%d" % ttl_ms), bulk(b"%d" % retention_ms)])
        commands = [
            b"".join(
                [head, bulk(self.fence_key(n, s).encode()), bulk(self.entry_key(n).encode()), tail]
            )
            for n, s in fences
        ]
        replies = self.masters.broadcast(commands, durable=True) if commands else []
        errors = _errors(self.masters, replies)
        quorum, total = self.masters.quorum, len(self.masters.nodes)
        claims = []
        answered = [r for r in replies if not isinstance(r, Exception)]
        for index in range(len(fences)):
            values = [r[index] for r in answered]
            statuses = [v & 3 for v in values]
            last = max(values, default=0) >> 2
            ours = statuses.count(CLAIMED) + statuses.count(TAKEN_OVER)
            if DONE in statuses:
                status: ClaimStatus | None = ClaimStatus.DONE
            elif ours >= quorum:
                status = ClaimStatus.CLAIMED
            elif total - len(errors) < quorum:
                status = None
            else:
                status = ClaimStatus.HELD
            claims.append(Claim(status, last, errors, TAKEN_OVER in statuses))
        return claims

    def unclaim(self, fences: Sequence[Fence], token: str) -> None:
        """Give back claims that did not reach a majority, so nobody waits for their TTL."""
        if fences:
            self.masters.broadcast(
                [("EVALSHA", self._unclaim, 1, self.fence_key(n, s), token) for n, s in fences]
            )

    def extend(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[bool]:
        """Extend our claims by ``ttl`` from now; True for each still held on a majority."""
        if not fences:
            return []
        ttl_ms, retention_ms = max(1, int(ttl * 1000)), int(retention * 1000)
        replies = self.masters.broadcast(
            [
                ("EVALSHA", self._extend, 1, self.fence_key(n, s), token, ttl_ms, retention_ms)
                for n, s in fences
            ],
            durable=True,
        )
        answered = [r for r in replies if not isinstance(r, Exception)]
        quorum = self.masters.quorum
        return [sum(r[i] for r in answered) >= quorum for i in range(len(fences))]

    def finish(self, outcomes: Sequence[SlotOutcome], token: str, retention: float) -> list[bool]:
        """Mark our claimed fences done and advance the entries: (name, slot, outcome, sent,
        skipped). A fence that is done already, or claimed by another replica since ours
        expired, is left alone.

        Returns, for each outcome, whether a majority of masters marked it done.
        """
        if not outcomes:
            return []
        head = evalsha_head(self._finish, 2, 6)
        retention_arg = bulk(b"%d" % int(retention * 1000))
        token_arg = bulk(token.encode())
        commands = [
            b"".join([
                head, bulk(self.fence_key(name, slot).encode()),
                bulk(self.entry_key(name).encode()), bulk(outcome.encode()), retention_arg,
                bulk(b"%d" % slot), bulk(b"%d" % sent), bulk(b"%d" % skipped), token_arg,
            ])
            for name, slot, outcome, sent, skipped in outcomes
        ]  # fmt: skip
        replies = self.masters.broadcast(commands, durable=True)
        answered = [r for r in replies if not isinstance(r, Exception)]
        quorum = self.masters.quorum
        return [sum(r[i] for r in answered) >= quorum for i in range(len(outcomes))]

    # KEYS[1] replica key, KEYS[2] ``replicas`` (sorted set: replica id -> heartbeat expiry),
    # KEYS[3] the runtime schedule's revision, KEYS[4] ``sharing`` (as ``replicas``, those
    # that take a share of the entries)
    # ARGV[1] heartbeat JSON, ARGV[2] ttl in ms, ARGV[3] replica id, ARGV[4] '1' when it
    # takes a share
    # -> {live replicas, the schedule's revision or false, the sharing replicas' ids}
    # Scores are seconds on the master's own clock (TIME), never a replica's: a replica
    # whose clock is behind would be trimmed at once, one ahead would push the others
    # out. Each score is when that heartbeat expires, so replicas with different TTLs are
    # trimmed each at its own; readers compare scores with the same master's TIME
    # (replicas). Redis >= 5 replicates a script's effects, so TIME before a
    # write is allowed; 3.2 and 4 must be asked to (redis.replicate_commands, a no-op
    # from 5 on).
    HEARTBEAT = """
    if redis.replicate_commands then redis.replicate_commands() end
    local time = redis.call('TIME')
    local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]) / 1000, ARGV[3])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    if ARGV[4] == '1' then
        redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]) / 1000, ARGV[3])
    else
        redis.call('ZREM', KEYS[4], ARGV[3])
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
    return {
        redis.call('ZCARD', KEYS[2]), redis.call('GET', KEYS[3]),
        redis.call('ZRANGE', KEYS[4], 0, -1)
    }
    """

    def heartbeat(self, replica: str, info: dict[str, Any], ttl: float) -> int:
        """Write this replica's heartbeat; returns how many replicas are alive.

        Raises QuorumUnavailable without a majority. Live replicas are also kept in a
        sorted set scored by heartbeat expiry on each master's clock, so counting them is
        part of the same trip and no replica's clock decides who counts as alive.
        """
        script = self.masters.script(self.HEARTBEAT)  # registered once, loaded lazily
        payload = json.dumps(info, sort_keys=True)
        # durable: a replica reports ready only while its writes count
        answers = self._majority(
            "heartbeat",
            [
                (
                    "EVALSHA", script, 4, self.replica_key(replica), self.keys.replicas,
                    self.keys.schedule_rev, self.keys.sharing, payload,
                    max(1, int(ttl * 1000)), replica, "1" if info.get("share") else "0",
                )
            ],
            durable=True,
        )  # fmt: skip
        self.saw_schedule_revision(max(int(a[0][1] or 0) for a in answers))
        self.saw_sharing(sorted({_text(r) for a in answers for r in a[0][2]}))
        return max(int(a[0][0]) for a in answers)

    def forget_replica(self, replica: str) -> None:
        self.masters.broadcast(
            [
                ("DEL", self.replica_key(replica)),
                ("ZREM", self.keys.replicas, replica),
                ("ZREM", self.keys.sharing, replica),
            ]
        )

    def replicas(self) -> list[dict[str, Any]]:
        """Live replicas: the union of the masters' sets, the freshest heartbeat of each.

        A heartbeat's age is measured on the master that holds it: its score in
        ``replicas`` (when it expires) against that master's ``TIME``, so neither this
        host's clock nor the replica's enters.
        """
        listed = self._each(
            "replicas", [("TIME",), ("ZRANGE", self.keys.replicas, 0, -1, "WITHSCORES")]
        )
        scored = [None if r is None else (_seconds(r[0]), _scores(r[1])) for r in listed]
        names = sorted({name for s in scored if s is not None for name in s[1]})
        if not names:
            return []
        got = self._each("replicas", [("GET", self.replica_key(n)) for n in names])
        found: dict[str, dict[str, Any]] = {}
        for answer, seen in zip(got, scored, strict=True):
            if answer is None:
                continue
            now, scores = seen if seen is not None else (0.0, {})
            for name, raw in zip(names, answer, strict=True):
                if raw:
                    info = json.loads(raw)
                    info["seen_ago"] = (
                        None if seen is None else _seen_ago(info, scores.get(name), now)
                    )
                    current = found.get(name)
                    if current is None or _fresher(info["seen_ago"], current["seen_ago"]):
                        found[name] = info
        return sorted(found.values(), key=lambda r: (r["host"], r["pid"]))

    # -- schedules that change while beat runs ---------------------------------------

    def start_at(self, names: Sequence[str], slot: int) -> None:
        if names:
            self.masters.broadcast(
                [("EVALSHA", self._raise, 1, self.entry_key(name), slot) for name in names]
            )

    def mark_gone(self, names: Sequence[str], now: int) -> None:
        if names:
            self.masters.broadcast([("HSET", self.entry_key(n), "gone", now) for n in names])

    def gone(self, names: Sequence[str]) -> list[int]:
        """The newest over the masters that answer."""
        if not names:
            return []
        answers = self._majority("gone", [("HGET", self.entry_key(n), "gone") for n in names])
        return [max((int(a[i]) for a in answers if a[i]), default=0) for i in range(len(names))]

    def anchors(self, entries: Sequence[tuple[str, int]]) -> list[int | None]:
        """The smallest over the masters that know it (the agreed one wins on init)."""
        if not entries:
            return []
        answers = self._majority("anchors", [("GET", self.anchor_key(n, e)) for n, e in entries])
        return [
            min((int(a[i]) for a in answers if a[i]), default=None) for i in range(len(entries))
        ]

    # -- the runtime schedule ------------------------------------------------------------

    # KEYS[1] doc, KEYS[2] rev; ARGV[1] rev, ARGV[2] doc JSON -> 1 when written
    WRITE_SCHEDULE = """
    if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[1]) then return 0 end
    redis.call('SET', KEYS[1], ARGV[2])
    redis.call('SET', KEYS[2], ARGV[1])
    return 1
    """

    def schedule_revision(self) -> int:
        """The newest revision a majority of masters answers with."""
        answers = self._majority("schedule", [("GET", self.keys.schedule_rev)])
        return max(int(a[0] or 0) for a in answers)

    def read_schedule(self) -> StoredSchedule:
        """The newest revision a majority answers with, and its document: a master that
        missed an edit (down, restarted empty) is outvoted, and brought up to date by the
        next edit."""
        answers = self._majority(
            "schedule", [("GET", self.keys.schedule_rev), ("GET", self.keys.schedule_doc)]
        )
        rev, raw = max(((int(a[0] or 0), a[1]) for a in answers), key=lambda pair: pair[0])
        return StoredSchedule(rev, json.loads(raw) if raw else {})

    def write_schedule(self, revision: int, doc: dict[str, Any]) -> bool:
        """Written on every master whose revision is older; True when a majority took it."""
        script = self.masters.script(self.WRITE_SCHEDULE)
        payload = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        command = (
            "EVALSHA", script, 2, self.keys.schedule_doc, self.keys.schedule_rev, revision, payload
        )  # fmt: skip
        answers = self._majority("schedule", [command], durable=True)
        return sum(int(a[0]) for a in answers) >= self.masters.quorum

    def mark_runs_sent(self, run_ids: Sequence[str], retention: float) -> None:
        if run_ids:
            ms = max(1, int(retention * 1000))
            self.masters.broadcast([("SET", self.keys.run_sent(r), 1, "PX", ms) for r in run_ids])

    def runs_sent(self, run_ids: Sequence[str]) -> set[str]:
        """Those any answering master knows were sent."""
        if not run_ids:
            return set()
        answers = self._majority("runs", [("GET", self.keys.run_sent(r)) for r in run_ids])
        return {r for i, r in enumerate(run_ids) if any(a[i] for a in answers)}

    # -- run state ---------------------------------------------------------------------

    # KEYS[1] run state hash; ARGV[1] field, ARGV[2] slot ms, ARGV[3] retention ms -> 1
    RAISE_RUN = """
    local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
    if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
    """

    def run_states(self, entries: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per field, the maximum over the masters that answer."""
        if not entries:
            return {}
        commands = [("HMGET", self.keys.run_state(e), *RUN_STATE_FIELDS) for e in entries]
        answers = self._majority("run state", commands)
        return {
            entry: {
                field: max((int(a[index][i]) for a in answers if a[index][i]), default=0)
                for i, field in enumerate(RUN_STATE_FIELDS)
            }
            for index, entry in enumerate(entries)
        }

    def raise_run_states(self, writes: Sequence[tuple[str, str, int]], retention: float) -> None:
        if writes:
            script = self.masters.script(self.RAISE_RUN)
            ms = max(1, int(retention * 1000))
            self.masters.broadcast(
                [("EVALSHA", script, 1, self.keys.run_state(e), f, s, ms) for e, f, s in writes]
            )

    def count_overlapped(self, entry: str, count: int) -> None:
        self.masters.broadcast([("HINCRBY", self.keys.run_state(entry), "overlapped", count)])

    def outcomes(self, fences: Sequence[Fence]) -> list[str | None]:
        """The outcome any answering master holds for each fence (a majority must answer)."""
        if not fences:
            return []
        answers = self._majority("slots", [("GET", self.fence_key(n, s)) for n, s in fences])
        found: list[str | None] = []
        for index in range(len(fences)):
            done = [_text(a[index]) for a in answers if a[index] is not None]
            outcome = next((v[len(DONE_MARK) :] for v in done if v.startswith(DONE_MARK)), None)
            found.append(outcome)
        return found

    def entry_counts(self, name: str) -> dict[str, int]:
        """The maximum of each field over the masters that answer."""
        merged: dict[str, int] = {}
        for answer in self._majority("entry", [("HGETALL", self.entry_key(name))]):
            values = answer[0]
            pairs = (
                values.items()
                if isinstance(values, dict)
                else zip(values[::2], values[1::2], strict=True)
            )
            for field, value in pairs:
                key = _text(field)
                merged[key] = max(merged.get(key, 0), int(value))
        if merged:
            merged.setdefault("dispatched", 0)
            merged.setdefault("skipped", 0)
        return merged

    def _each(self, what: str, commands: list[tuple[Any, ...]]) -> list[list[Any] | None]:
        """Each master's replies, in the masters' order (None: no answer), when a majority
        answered; else QuorumUnavailable."""
        replies = self.masters.broadcast(commands)
        answered = sum(not isinstance(r, Exception) for r in replies)
        if answered < self.masters.quorum:
            raise QuorumUnavailable(
                what, self.masters.quorum, len(replies), _errors(self.masters, replies)
            )
        return [None if isinstance(r, Exception) else r for r in replies]

    def _majority(
        self, what: str, commands: list[tuple[Any, ...]], *, durable: bool = False
    ) -> list[list[Any]]:
        replies = self.masters.broadcast(commands, durable=durable)
        answers = [r for r in replies if not isinstance(r, Exception)]
        if len(answers) < self.masters.quorum:
            raise QuorumUnavailable(
                what, self.masters.quorum, len(replies), _errors(self.masters, replies)
            )
        return answers


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seconds(time: list[bytes]) -> float:
    """A master's ``TIME`` reply in seconds."""
    return int(time[0]) + int(time[1]) / 1e6


def _scores(pairs: list[bytes]) -> dict[str, float]:
    """``ZRANGE ... WITHSCORES`` as {member: score}."""
    return {_text(m): float(s) for m, s in zip(pairs[::2], pairs[1::2], strict=True)}


def _seen_ago(info: dict[str, Any], expires: float | None, now: float) -> float | None:
    """Seconds since a heartbeat that expires at ``expires`` (the master's clock), written
    ``info["ttl"]`` seconds before; None when either is unknown."""
    ttl = info.get("ttl")
    if expires is None or ttl is None:
        return None
    return round(max(0.0, float(ttl) - (expires - now)), 3)


def _fresher(seen: float | None, than: float | None) -> bool:
    return seen is not None and (than is None or seen < than)


def _errors(masters: Masters, replies: Sequence[list[Any] | Exception]) -> dict[str, str]:
    return {
        node.name: describe(reply)
        for node, reply in zip(masters.nodes, replies, strict=True)
        if isinstance(reply, Exception)
    }

"""The Celery Beat scheduler that runs on every replica and dispatches each slot once.

Every replica runs ``celery beat -S singleton`` with the same schedule. For each due slot
a replica claims the slot's fence in the slot store (a majority of Redis masters, or the
database: :mod:`celery_singleton_beat.stores`), publishes the message, then marks the
fence done and advances the entry's shared state; a replica that loses the claim keeps
the slot in view until the winner has marked it done. A winner that dies between claim
and done lets its claim expire; the replica that claims the slot next takes the expired
claim over and publishes again, with the same task id, which the worker side drops as a
duplicate::

    replica A: claim fire:report:t ok ── publish ── (SIGKILL)
    replica B: claim fire:report:t held ... held ... claim expired ── taken over ── publish
               (same task id uuid5(report, t): the worker runs it once)

What to do with a claimed slot (fire, or count it as missed) is decided by the pure
function in :mod:`.decide`.

In ``leader`` mode only the holder of a Redlock lease evaluates the schedule; the fences
still apply, so a leader that was paused past its lease cannot publish twice.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from celery import beat

from celery_singleton_beat import beat_log, broker, defaults, events, overlap
from celery_singleton_beat._compat import (
    evaluate_entry_args,
    evaluate_entry_kwargs,
    producer_batch,
)
from celery_singleton_beat.config import as_written
from celery_singleton_beat.decide import SlotView, Verdict, decide
from celery_singleton_beat.entries import Entry, Plan
from celery_singleton_beat.errors import ConfigurationError, StoreUnavailable
from celery_singleton_beat.health import HealthServer
from celery_singleton_beat.keeper import ClaimKeeper
from celery_singleton_beat.locks import Lease, Watchdog
from celery_singleton_beat.replan import (
    POLL_EVERY,
    Changes,
    SourceWatcher,
    UnknownTasks,
    compare,
)
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.schema import (
    LEADER_LOCK,
    ClaimStatus,
    Header,
    Misfire,
    Mode,
    Outcome,
    Overlap,
    Role,
    SkipReason,
)
from celery_singleton_beat.slots import OnceSlots, Slots, slot_label, slot_task_id, to_datetime
from celery_singleton_beat.sources import BEAT_SCHEDULE, load_source
from celery_singleton_beat.stores import Claim, SlotOutcome

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0
#: Heartbeats outlive this many missed beats before the replica drops off the list.
HEARTBEAT_TTL = defaults.HEARTBEAT_TTL
#: Longest sleep between two ticks: the loop heartbeats and elects at least this often.
LONGEST_SLEEP = 1.0
SLOT_HEADER = Header.SLOT.value
ENTRY_HEADER = Header.ENTRY.value
REPLICA_HEADER = Header.REPLICA.value
#: Slots claimed per round trip when many are due at once.
CLAIM_CHUNK = 500
#: Unhandled slots of one entry claimed one by one (the newest); older ones are counted.
BACKLOG = 64
#: The fence outcome of a slot its entry's overlap policy held back.
OVERLAPPED = Outcome.SKIPPED_OVERLAP.value


@dataclasses.dataclass(frozen=True)
class _Pass:
    """One entry in one pass of the loop: its newest due slot, how many older slots were
    left out of the claim (counted by number), and the oldest slot claimed one by one."""

    newest: int | None
    left_out: int
    oldest: int


@dataclasses.dataclass
class _Batch:
    """One claimed chunk: what to publish, to mark done, to give back and to look at again."""

    token: str
    plans: dict[str, Plan] = dataclasses.field(default_factory=dict)
    newest: dict[str, int] = dataclasses.field(default_factory=dict)
    """Each entry's newest slot in the chunk."""
    fire: list[tuple[Plan, int, float, int]] = dataclasses.field(default_factory=list)
    """Slots to publish, with how late they are (s) and the older slots they stand for."""
    outcomes: list[SlotOutcome] = dataclasses.field(default_factory=list)
    """How each decided slot went, to mark its fence done."""
    skipped: dict[str, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)
    giveback: list[tuple[Plan, int]] = dataclasses.field(default_factory=list)
    retry: dict[str, int] = dataclasses.field(default_factory=dict)
    """Entries with held slots, and in how many ms to look at them again."""
    overlapped: list[tuple[Plan, int]] = dataclasses.field(default_factory=list)
    """Slots held back by their entry's overlap policy."""

    def to_publish(self) -> list[tuple[str, int]]:
        return [(plan.name, slot) for plan, slot, _late, _counted in self.fire]


@dataclasses.dataclass
class _Sending:
    """The slot being sent through ``apply_entry``, and how its publish ended."""

    slot: int
    task_id: str
    track: bool = False
    """Whether workers report the run's state (the entry's overlap policy needs it)."""
    error: Exception | None = None


class Scheduler(beat.Scheduler):  # type: ignore[misc]
    """Highly available beat scheduler: ``beat_scheduler = "celery_singleton_beat.Scheduler"``."""

    Entry = Entry

    def __init__(self, app: Any, *args: Any, lazy: bool = False, **kwargs: Any) -> None:
        beat_log.install()  # first: an error from here on is logged as one line
        self.runtime = Runtime.of(app)
        self.config = self.runtime.config
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.role = Role.ACTIVE if self.config.mode == Mode.ACTIVE else Role.STANDBY
        self.store = self.runtime.store
        self.leader_lock = self.store.leader_lock(self.replica)
        self.plans: dict[str, Plan] = {}
        self._specs: dict[str, Any] = {}
        self.source = load_source(app, self.config.schedule_source)
        self._watcher = SourceWatcher(self.source)
        self._unknown_tasks = UnknownTasks(app)
        self._wakeups: list[tuple[int, str]] = []
        self._broker_cold = True
        self._initialized = False
        self._ready: bool | None = None
        self._ready_detail = "starting"
        self._failures = 0
        self._last_tick = time.monotonic()
        self._next_heartbeat = 0.0
        self._next_election = 0.0
        self._lease: Lease | None = None
        self._watchdog: Watchdog | None = None
        self._health: HealthServer | None = None
        self._sending: _Sending | None = None
        port = None if lazy else self.config.health_port
        metrics = _metrics_renderer() if port is not None else None  # before the first read
        super().__init__(app, *args, lazy=lazy, **kwargs)
        if port is not None:
            try:
                self._health = HealthServer(
                    port, self.alive, self.ready, metrics, host=self.config.health_host
                ).start()
            except ConfigurationError as exc:
                raise as_written(app.conf, exc) from None

    # -- Celery's Scheduler interface -------------------------------------------------

    @cached_property
    def connection(self) -> Any:
        """Beat's broker connection, with socket timeouts so that a publish is bounded."""
        return self.app.connection_for_write(
            transport_options=publish_timeouts(self.app.conf, self.config.publish_timeout)
        )

    def setup_schedule(self) -> None:
        self._specs = dict(self._watcher.first())
        self.plans = self._build(self._specs, {}, starting=True)
        self.data = {name: plan.entry for name, plan in self.plans.items()}
        self._unknown_tasks.warn(self.plans.values())
        self._initialized = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass of the loop; returns how long to sleep before the next."""
        self._last_tick = time.monotonic()
        try:
            delay = self._tick()
        except StoreUnavailable as exc:
            self._set_ready(False, str(exc))
            self._failures += 1
            backoff = min(5.0, 0.25 * 2.0 ** min(self._failures, 5))
            return backoff * random.uniform(0.75, 1.25)
        self._failures = 0
        self._set_ready(True, self.store.up_text)
        return delay

    def close(self) -> None:
        if self._health is not None:
            self._health.stop()
            self._health = None
        self._step_down("shutting down", release=True)
        try:
            self.store.forget_replica(self.replica)
        finally:
            self.source.close()
            self.runtime.close_store()
            super().close()

    @property
    def info(self) -> str:
        return (
            f"    . singleton beat -> mode {self.config.mode}, key prefix "
            f"{self.config.key_prefix!r}\n    . {self.store.describe()}"
        )

    # -- probes -----------------------------------------------------------------------

    def alive(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last_tick
        return age < 10 * LONGEST_SLEEP, f"last tick {age:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        """Ready while the slot store answers. Entries left out because two sources give
        their name are told in the detail: the replica still schedules every other entry,
        and a rolling restart must not wait on an edit of the schedule."""
        conflicts = self.source.conflicts
        if not conflicts:
            return bool(self._ready), self._ready_detail
        left_out = "; ".join(str(c) for c in conflicts)
        count = f"{len(conflicts)} entr{'y' if len(conflicts) == 1 else 'ies'}"
        return bool(self._ready), f"{self._ready_detail}; {count} left out: {left_out}"

    # -- the loop ---------------------------------------------------------------------

    def _tick(self) -> float:
        monotonic = time.monotonic()
        if monotonic >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = monotonic + HEARTBEAT_EVERY
            # one round trip per idle tick: a poll due now waits a quarter second, which
            # puts the polls halfway between heartbeats from then on
            self._watcher.defer(monotonic + POLL_EVERY / 2)
        if not self._lead(monotonic):
            return min(LONGEST_SLEEP, self._next_election - monotonic)
        specs = self._watcher.poll(monotonic)
        if specs is not None:
            self._replan(specs)
        if not self._initialized:
            self._load_state()
            self._broker_cold = True
        if self._broker_cold:
            self._warm_broker()
        now = self.runtime.now_ms()
        due = self._pop_due(now)
        if due:
            self._dispatch(due, now)
        monotonic = time.monotonic()
        until = min(self._watcher.next_poll, self._next_heartbeat) - monotonic
        return min(self._sleep_for(self.runtime.now_ms()), max(0.0, until))

    def _heartbeat(self) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mode": self.config.mode,
            "role": self.role,
            "last_tick": self.runtime.clock(),
            "entries": len(self.plans),
            "ttl": HEARTBEAT_TTL,
        }
        alive = self.store.heartbeat(self.replica, info, HEARTBEAT_TTL)
        events.emit(
            events.ReplicaSeen(
                host=str(info["host"]), pid=os.getpid(), mode=self.config.mode,
                role=self.role, ready=bool(self._ready), replicas=alive,
            )
        )  # fmt: skip

    def _load_state(self) -> None:
        """Read every entry's shared progress (and interval anchors) in two round trips."""
        self._wakeups = []
        plans, once = [], []
        for plan in self.plans.values():
            if isinstance(plan.slots, OnceSlots):
                # a single slot (run now, one-off, clocked) keeps its time even when first
                # seen after it, as at start-up: its fence sends it once (or says it was
                # decided already), the misfire policy decides how late
                plan.next_slot = plan.slots.at_ms
                self._wake(plan, plan.next_slot)
                once.append(plan)
            else:
                plans.append(plan)
        now = self.runtime.now_ms()
        loaded = self.store.init([(p.name, p.every_ms) for p in plans], now)
        gone = self.store.gone([p.name for p in plans])
        back = [
            p.name for p, (last, _a), left in zip(plans, loaded, gone, strict=True) if left > last
        ]
        self.store.start_at(back, now)
        owed = [(p.name, now, p.slots) for p in once]
        for plan, (last, anchor), left in zip(plans, loaded, gone, strict=True):
            if anchor is not None:
                plan.slots.anchor_ms = anchor  # type: ignore[attr-defined]
            # an entry back in the schedule since it left owes nothing from its absence
            since = max(last, now) if left > last else last
            plan.next_slot = plan.slots.next_after(since)
            self._wake(plan, plan.next_slot)
            owed.append((plan.name, since, plan.slots))
        self._report_scheduled(owed)
        self._initialized = True
        logger.info("singleton beat: %d entries loaded, %s", len(self.plans), self.role)

    def _warm_broker(self) -> None:
        """Connect to the broker before claiming anything, so that no claim waits on a
        connection's handshake (on a slow broker, several round trips)."""
        self._broker_cold = False
        try:
            broker.warm(self.producer, self._queues())
        except Exception as exc:
            logger.warning("singleton beat: the broker does not answer yet: %s", exc)

    def _queues(self) -> list[Any]:
        """The queues the entries' messages are routed to."""
        queues: dict[str, Any] = {}
        router = self.app.amqp.router
        for plan in self.plans.values():
            entry = plan.entry
            try:
                queue = router.route(entry.publish_options(), entry.task, (), {})["queue"]
            except Exception:
                continue
            if queue is not None:
                queues.setdefault(queue.name, queue)
        return list(queues.values())

    def _wake(self, plan: Plan, when: int | None) -> None:
        if when is not None and not plan.policy.paused:
            plan.wake = when
            heapq.heappush(self._wakeups, (when, plan.name))

    # -- schedule changes -------------------------------------------------------------

    def _replan(self, specs: Any) -> None:
        """Follow a schedule source's new entries (see :mod:`celery_singleton_beat.replan`)."""
        previous, self._specs = self._specs, dict(specs)
        changes = compare(self.plans, self._build(specs, previous))
        if not changes:
            return
        self._unknown_tasks.warn(changes.plans.values())
        self.plans = changes.plans
        self.data = {name: plan.entry for name, plan in self.plans.items()}
        self._report_scheduled([(name, self.runtime.now_ms(), None) for name in changes.removed])
        if self._initialized:
            try:
                self.store.mark_gone(changes.removed, self.runtime.now_ms())
                self._start_fresh(changes)
            except StoreUnavailable:
                self._initialized = False  # every plan is loaded again once a majority answers
                raise
        logger.info(
            "singleton beat: schedule changed: %d added, %d changed, %d resumed, %d removed, "
            "%d updated", len(changes.added), len(changes.changed), len(changes.resumed),
            len(changes.removed), changes.updated,
        )  # fmt: skip

    def _build(
        self, specs: Any, previous: dict[str, Any], starting: bool = False
    ) -> dict[str, Plan]:
        """A plan per entry; one the source gave before (the very same object) keeps its
        plan. An entry that cannot be built is logged and left out, or keeps its previous
        form: it is data, and stops no replica. At start, one of ``beat_schedule`` stops
        beat instead: it is code, and a deploy must not go on without it."""
        built: dict[str, Plan] = {}
        for name, spec in specs.items():
            if previous.get(name) is spec and name in self.plans:
                built[name] = self.plans[name]
                continue
            try:
                entry = self.Entry(**dict(spec, name=name, app=self.app))
                built[name] = Plan.build(entry, self.app.timezone, self.config.misfire_grace)
            except Exception as exc:
                if starting and self.source.source_of(name) == BEAT_SCHEDULE:
                    raise
                logger.error(
                    "singleton beat: entry %r of the schedule source %r is refused, %s: %s",
                    name, self.source.source_of(name),
                    "keeping its previous form" if name in self.plans else "left out", exc,
                )  # fmt: skip
                if name in self.plans:
                    built[name] = self.plans[name]
        return built

    def _start_fresh(self, changes: Changes) -> None:
        """Added and changed plans start from their first slot after now (one with a
        single slot from that slot); resumed ones from where they stopped (their missed
        slots follow the misfire policy)."""
        now = self.runtime.now_ms()
        fresh = [plan for plan in changes.fresh if not isinstance(plan.slots, OnceSlots)]
        owed: list[tuple[str, int, Slots | None]] = []
        for plan in changes.fresh:
            if isinstance(plan.slots, OnceSlots):
                # a single slot (run now, one-off, clocked) keeps its time even when seen
                # late: its fence sends it once, the misfire policy decides how late
                plan.next_slot = plan.slots.at_ms
                self._wake(plan, plan.next_slot)
                owed.append((plan.name, now, plan.slots))
        if fresh:
            loaded = self.store.init([(p.name, p.every_ms) for p in fresh], now)
            self.store.start_at([p.name for p in fresh], now)
            for plan, (last, anchor) in zip(fresh, loaded, strict=True):
                if anchor is not None:
                    plan.slots.anchor_ms = anchor  # type: ignore[attr-defined]
                plan.next_slot = plan.slots.next_after(max(last, now))
                self._wake(plan, plan.next_slot)
                owed.append((plan.name, max(last, now), plan.slots))
            self._broker_cold = True
        self._report_scheduled(owed)
        for plan in changes.resumed:
            self._wake(plan, min(plan.next_slot or now, now))

    def _report_scheduled(self, owed: Sequence[tuple[str, int, Slots | None]]) -> None:
        """Tell recorders which slots each entry owes from when on (``None``: none, it
        left the schedule): an :class:`~celery_singleton_beat.events.EntryScheduled` each.
        A single slot (run now, one-off, clocked) is owed whenever it falls; it is told
        from the moment it is seen."""
        if not events.wanted():
            return
        for name, since, slots in owed:
            events.emit(
                events.EntryScheduled(
                    entry=name, since=to_datetime(since), slots=slots, replica=self.replica
                )
            )

    def _pop_due(self, now: int) -> list[Plan]:
        due: dict[str, Plan] = {}
        while self._wakeups and self._wakeups[0][0] <= now:
            when, name = heapq.heappop(self._wakeups)
            plan = self.plans.get(name)
            if plan is not None and plan.wake == when and not plan.policy.paused:
                due[name] = plan
        return list(due.values())

    def _sleep_for(self, now: int) -> float:
        if not self._wakeups:
            return LONGEST_SLEEP
        return max(0.0, min(LONGEST_SLEEP, (self._wakeups[0][0] - now) / 1000))

    # -- dispatching ------------------------------------------------------------------

    def _dispatch(self, due: list[Plan], now: int) -> None:
        work: list[tuple[Plan, int]] = []
        passes: dict[str, _Pass] = {}
        for plan in due:
            slots, left_out = plan.due(now, BACKLOG)
            if not slots:
                self._wake(plan, plan.next_slot)
                continue
            fresh = [s for s in slots if s not in plan.held]
            oldest = fresh[0] if fresh else slots[0]
            passes[plan.name] = _Pass(plan.newest_due(now), left_out, oldest)
            work.extend((plan, slot) for slot in slots)
        chunks = [work[first : first + CLAIM_CHUNK] for first in range(0, len(work), CLAIM_CHUNK)]
        done = 0
        try:
            for chunk in chunks:
                self._dispatch_chunk(chunk, passes, now)
                done += 1
        except BaseException:
            # the store stopped answering: the entries of this chunk and of those not
            # reached yet are looked at again once it is back, not dropped
            for plan, _slot in (item for chunk in chunks[done:] for item in chunk):
                self._wake(plan, plan.wake)
            raise

    def _dispatch_chunk(
        self, work: list[tuple[Plan, int]], passes: dict[str, _Pass], now: int
    ) -> None:
        """Claim a chunk of slots in one round trip, publish ours, finish them in one more.

        While the chunk is being published a keeper thread extends its claims, so that a
        slow broker cannot let a claim expire under a message in flight (which would let
        another replica send the slot again). At the publish timeout the keeper cuts the
        broker connection: the publish fails, and the slots are given back and sent
        again, with the same task ids.
        """
        token = f"{secrets.token_hex(8)}@{self.replica}"
        config = self.config
        fences = [(p.name, s) for p, s in work]
        claims = self.store.claim(fences, token, config.claim_ttl, config.fence_retention)
        if any(c.status is None for c in claims):
            self.store.unclaim(fences, token)
            for plan, _slot in work:
                self._wake(plan, plan.wake)
            errors = next(c.errors for c in claims if c.status is None)
            raise self.store.unavailable("slots", errors)
        batch = _Batch(token)
        for (plan, slot), claim in zip(work, claims, strict=True):
            self._sort(batch, plan, slot, claim, this=passes[plan.name], now=now)
        self._hold_overlaps(batch, now)
        abort = functools.partial(broker.cut, self.producer)
        with ClaimKeeper(self.store, token, config, batch.to_publish(), abort) as keeper:
            self._publish_batch_of(batch, keeper)
        self._finish(batch)

    def _sort(
        self, batch: _Batch, plan: Plan, slot: int, claim: Claim, *, this: _Pass, now: int
    ) -> None:
        """File one claimed (or not) slot of the chunk under what happens to it next."""
        batch.plans[plan.name] = plan
        if slot > batch.newest.get(plan.name, -1):
            batch.newest[plan.name] = slot
        if claim.status == ClaimStatus.DONE:
            plan.held.discard(slot)
            return
        if claim.status == ClaimStatus.HELD:
            plan.held.add(slot)
            batch.retry[plan.name] = random.randint(50, 250)
            return
        view = SlotView(
            slot, newest=slot == this.newest, resumed=claim.taken_over or slot in plan.held
        )
        plan.held.discard(slot)
        verdict = decide(view, claim.last, now, plan.policy.misfire, plan.policy.misfire_grace)
        counted = this.left_out if slot == this.oldest and not view.resumed else 0
        if verdict is Verdict.FIRE and not self._may_publish():
            batch.giveback.append((plan, slot))
        elif verdict is Verdict.FIRE:
            batch.fire.append((plan, slot, max(0.0, (now - slot) / 1000), counted))
        else:
            batch.skipped.setdefault(plan.name, []).append((slot, 1 + counted))
            batch.outcomes.append(SlotOutcome(plan.name, slot, verdict.value, 0, 1 + counted))

    def _hold_overlaps(self, batch: _Batch, now: int) -> None:
        """Slots whose entry's overlap policy holds them back (see :mod:`.overlap`) are
        decided ``skipped_overlap`` instead of sent."""
        watched = [item for item in batch.fire if item[0].policy.overlap != Overlap.ALLOW]
        if not watched:
            return
        try:
            states = self.store.run_states(sorted({plan.name for plan, *_rest in watched}))
        except Exception as exc:
            logger.warning("singleton beat: run states unreadable, sending: %s", exc)
            return
        for item in watched:
            plan, slot = item[0], item[1]
            policy = plan.policy
            if overlap.blocked(policy.overlap, states[plan.name], now, policy.overlap_ttl):
                batch.fire.remove(item)
                batch.overlapped.append((plan, slot))
                batch.outcomes.append(SlotOutcome(plan.name, slot, OVERLAPPED, 0, 0))

    def _may_publish(self) -> bool:
        if self.config.mode != Mode.LEADER:
            return True
        return self._lease is not None and self._lease.remaining() > 0

    def _publish_batch_of(self, batch: _Batch, keeper: ClaimKeeper) -> None:
        """Publish the slots to fire in one broker batch; a slot counts as sent once the
        batch reached the broker. Those not sent are kept claimed and looked at again."""
        sent: list[tuple[Plan, int, int, events.SlotFired]] = []
        try:
            with self._publish_batch():
                for plan, slot, late, counted in batch.fire:
                    if keeper.expired():
                        batch.giveback.append((plan, slot))
                        continue
                    skipped = batch.skipped.get(plan.name, [])
                    coalesced = counted + sum(n for s, n in skipped if s < slot)
                    task_id = self._publish(plan, slot)
                    sent.append((plan, slot, counted, events.SlotFired(
                        entry=plan.name, slot=to_datetime(slot), task_id=task_id,
                        task=plan.entry.task, replica=self.replica, late=late,
                        coalesced=coalesced if plan.policy.misfire == Misfire.COALESCE else 0,
                    )))  # fmt: skip
        except Exception as exc:
            # the batch did not reach the broker, or not all of it: each slot is given
            # back and sent again (same task id) by the next replica to look at it
            logger.error(
                "singleton beat: publishing %d message(s) failed, sending them again: %s: %s",
                len(sent), type(exc).__name__, exc,
                extra=self._log_fields(*(sent[0][:2] if sent else (None, None))),
            )  # fmt: skip
            self._broker_cold = True
            for plan, slot, _counted, _fired in sent:
                self._publish_failed(plan, slot, exc)
                batch.giveback.append((plan, slot))
                batch.retry[plan.name] = 1000
            return
        for plan, slot, counted, fired in sent:
            self._published(plan, slot)
            events.emit(fired)
            batch.outcomes.append(SlotOutcome(plan.name, slot, Verdict.FIRE.value, 1, counted))

    def _finish(self, batch: _Batch) -> None:
        """Mark the decided slots done, give back the rest, count and wake the entries."""
        self.store.unclaim([(p.name, s) for p, s in batch.giveback], batch.token)
        for plan, slot in batch.giveback:
            plan.held.add(slot)
            batch.retry.setdefault(plan.name, 0)
        self._tell_source(batch.outcomes)
        marked = self.store.finish(batch.outcomes, batch.token, self.config.fence_retention)
        lost = [o for o, ok in zip(batch.outcomes, marked, strict=True) if not ok]
        if lost:
            logger.warning(
                "singleton beat: %d slot(s) decided but not marked done on a majority (the "
                "claim expired or the masters did not answer), e.g. %r at %s; another replica "
                "may send them again with the same task id",
                len(lost), lost[0][0], slot_label(lost[0][1]),
                extra=self._log_fields(batch.plans.get(lost[0][0]), lost[0][1]),
            )  # fmt: skip
        self._track_runs(batch, marked)
        for name, skipped in batch.skipped.items():
            self._report_skipped(batch.plans[name], skipped)
        now = self.runtime.now_ms()
        for name, plan in batch.plans.items():
            after = plan.slots.next_after(batch.newest[name])
            if plan.next_slot is not None and (after is None or after > plan.next_slot):
                plan.next_slot = after
            wake = plan.next_slot
            if plan.held and name in batch.retry:
                retry = now + batch.retry[name]
                wake = retry if wake is None else min(wake, retry)
            elif plan.held:
                wake = now + 1000 if wake is None else min(wake, now + 1000)
            self._wake(plan, wake)

    def _track_runs(self, batch: _Batch, marked: list[bool]) -> None:
        """The run state of entries with an overlap policy: the slots sent, those held back."""
        outcomes = zip(batch.outcomes, marked, strict=True)
        done = {(n, s): o for (n, s, o, _p, _k), ok in outcomes if ok}
        sent = [
            (plan.name, "queued", slot)
            for plan, slot, _late, _counted in batch.fire
            if plan.policy.overlap != Overlap.ALLOW
            and done.get((plan.name, slot)) == Verdict.FIRE.value
        ]
        try:
            if sent:
                self.store.raise_run_states(sent, overlap.RETENTION)
            for plan, slot in batch.overlapped:
                if done.get((plan.name, slot)) == OVERLAPPED:
                    self.store.count_overlapped(plan.name, 1)
                    self._report_overlap(plan, slot)
        except Exception as exc:
            logger.warning("singleton beat: the run state could not be written: %s", exc)

    def _report_overlap(self, plan: Plan, slot: int) -> None:
        logger.info(
            "singleton beat: entry %r slot %s held back, its previous run is not done "
            "(overlap policy %s)", plan.name, slot_label(slot), plan.policy.overlap,
        )  # fmt: skip
        events.emit(
            events.SlotSkipped(
                entry=plan.name, slot=to_datetime(slot), count=1, reason=SkipReason.OVERLAP.value,
                replica=self.replica,
            )
        )  # fmt: skip

    def _tell_source(self, outcomes: list[SlotOutcome]) -> None:
        """The source learns of each slot this replica published, before its fence is
        marked done: a replica that dies in between leaves the slot to be sent again
        (same task id) and told again, and the source counts each slot once, so that
        no run goes uncounted (told after the mark, such a death would lose the count)."""
        fire = Verdict.FIRE.value
        runs = [(name, slot) for name, slot, outcome, _s, _k in outcomes if outcome == fire]
        if not runs:
            return
        try:
            self.source.published_many(runs, self.runtime.clock())
        except Exception as exc:
            logger.error(
                "singleton beat: the schedule source did not take the runs of %d slot(s), "
                "e.g. %r at %s: %s: %s", len(runs), runs[0][0], slot_label(runs[0][1]),
                type(exc).__name__, exc,
            )  # fmt: skip

    def _report_skipped(self, plan: Plan, skipped: list[tuple[int, int]]) -> None:
        count = sum(n for _slot, n in skipped)
        newest = max(slot for slot, _n in skipped)
        logger.warning(
            "singleton beat: entry %r missed %d slot(s) up to %s (misfire policy %s)",
            plan.name, count, slot_label(newest), plan.policy.misfire,
            extra=self._log_fields(plan, newest),
        )  # fmt: skip
        events.emit(
            events.SlotSkipped(
                entry=plan.name, slot=to_datetime(newest), count=count,
                reason=SkipReason.MISFIRE.value, replica=self.replica,
            )
        )  # fmt: skip

    def _publish_batch(self) -> Any:
        """Messages published inside go to the broker together at its end (one pipeline on
        Redis, with kombu >= 5.7); brokers without batches publish each message at once."""
        return producer_batch(self.producer, max_size=2 * CLAIM_CHUNK + 16)

    def _publish_failed(self, plan: Plan, slot: int, exc: BaseException) -> None:
        events.emit(
            events.SlotSkipped(
                entry=plan.name, slot=to_datetime(slot), count=1,
                reason=SkipReason.PUBLISH_FAILED.value, replica=self.replica,
                detail=f"{type(exc).__name__}: {exc}"[:500],
            )
        )  # fmt: skip

    def _log_fields(self, plan: Plan | None, slot: int | None) -> dict[str, Any]:
        """``extra=`` fields of a log line about one slot, for structured logs."""
        return {
            "replica": self.replica,
            "entry": plan.name if plan is not None else None,
            "slot": slot_label(slot) if slot is not None else None,
            "task_id": slot_task_id(plan.name, slot) if plan and slot is not None else None,
        }

    def _publish(self, plan: Plan, slot: int) -> str:
        """Send one slot through Celery's ``apply_entry`` (see :mod:`.beat_log`)."""
        sending = _Sending(
            slot, slot_task_id(plan.name, slot), track=plan.policy.overlap != Overlap.ALLOW
        )
        self._sending = sending
        try:
            with beat_log.sending(**self._log_fields(plan, slot)):
                self.apply_entry(plan.entry, producer=self.producer)
        finally:
            self._sending = None
        if sending.error is not None:
            raise sending.error
        return sending.task_id

    def apply_async(
        self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        """Publish the slot being sent, with its task id and slot headers; called by
        Celery's ``apply_entry``, after integrations wrapping it changed ``entry.options``."""
        sending = self._sending
        if sending is None:
            return super().apply_async(entry, producer, advance, **kwargs)
        try:
            return self._send_slot(entry, sending, producer)
        except Exception as exc:  # Celery's apply_entry would log and drop it
            sending.error = exc
            return None

    def _send_slot(self, entry: Any, sending: _Sending, producer: Any) -> Any:
        options = entry.publish_options()
        headers = dict(options.pop("headers", None) or {})
        headers.update(
            {
                Header.BEAT_TASK.value: True,
                SLOT_HEADER: slot_label(sending.slot),
                ENTRY_HEADER: entry.name,
                REPLICA_HEADER: self.replica,
            }
        )
        if sending.track:
            headers[overlap.TRACK_HEADER] = 1
        args = evaluate_entry_args(entry.args)
        kwargs = evaluate_entry_kwargs(entry.kwargs)
        task = self.app.tasks.get(entry.task)
        send = task.apply_async if task is not None else self._send_task(entry.task)
        # no retry inside kombu: a publish that failed is given back and sent again under
        # the slot's fence, never re-sent by kombu on a connection whose claim has expired
        options["retry"] = False
        return send(
            args, kwargs, producer=producer, task_id=sending.task_id, headers=headers, **options
        )

    def _send_task(self, name: str) -> Any:
        return lambda args, kwargs, **options: self.app.send_task(name, args, kwargs, **options)

    def _published(self, plan: Plan, slot: int) -> None:
        """Called between publishing a slot and marking it done (a seam for failure tests)."""

    # -- leader mode ------------------------------------------------------------------

    def _lead(self, monotonic: float) -> bool:
        """Whether this replica evaluates the schedule now (always, in active mode)."""
        if self.config.mode == Mode.ACTIVE:
            return True
        lease = self._lease
        if lease is not None:
            if not lease.lost and lease.remaining() > 0:
                return True
            self._step_down("its lease expired or could not be extended")
        if monotonic < self._next_election:
            return False
        self._next_election = monotonic + min(0.5, self.config.lease_ttl / 3)
        lease = self.leader_lock.acquire(LEADER_LOCK, ttl=self.config.lease_ttl)
        if lease is None:
            return False
        self._lease = lease
        self._watchdog = Watchdog(self.leader_lock, lease).start()
        self.role = Role.LEADER
        self._initialized = False  # a standby's view of the schedule is stale
        logger.info("singleton beat: %s is the leader now (fence %d)", self.replica, lease.fence)
        events.emit(events.LeaderChanged(replica=self.replica, leader=True, reason="elected"))
        return True

    def _step_down(self, reason: str, release: bool = False) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        lease, self._lease = self._lease, None
        if lease is None:
            return
        if release and lease.remaining() > 0:
            try:
                self.leader_lock.release(lease)
            except Exception:
                logger.warning("singleton beat: could not release the leader lease", exc_info=True)
        self.role = Role.STANDBY
        logger.warning("singleton beat: %s steps down to standby: %s", self.replica, reason)
        events.emit(events.LeaderChanged(replica=self.replica, leader=False, reason=reason))

    # -- readiness --------------------------------------------------------------------

    def _set_ready(self, ready: bool, detail: str) -> None:
        self._ready_detail = detail
        if ready == self._ready:
            return
        previous, self._ready = self._ready, ready
        events.emit(events.QuorumChanged(replica=self.replica, reachable=ready, detail=detail))
        if not ready:
            logger.error(
                "singleton beat: %s, publishing nothing until it is back: %s",
                self.store.down_text,
                detail,
            )
        elif previous is not None:
            logger.warning("singleton beat: %s again", self.store.up_text)


def publish_timeouts(conf: Any, timeout: float) -> dict[str, float]:
    """Transport options that bound one broker operation to ``timeout`` seconds, for the
    transports that block on sockets (Redis, AMQP); what ``broker_transport_options``
    sets already is kept."""
    url = str(conf.broker_write_url or conf.broker_url or "")
    scheme = (conf.broker_transport or url.partition("://")[0]).lower()
    if scheme in ("redis", "rediss", "sentinel"):
        wanted = {"socket_timeout": timeout}
    elif scheme in ("amqp", "amqps", "pyamqp"):
        wanted = {"read_timeout": timeout, "write_timeout": timeout}
    else:
        return {}
    given = conf.broker_transport_options or {}
    return {key: value for key, value in wanted.items() if given.get(key) is None}


def _metrics_renderer() -> Callable[[], tuple[bytes, str]] | None:
    """``/metrics`` when prometheus-client is installed (the ``[prometheus]`` extra)."""
    try:
        from celery_singleton_beat import metrics  # noqa: PLC0415  (optional extra)
    except ImportError:
        logger.info("singleton beat: prometheus-client is not installed; no /metrics")
        return None
    return metrics.install().render

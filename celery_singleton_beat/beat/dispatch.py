"""Dispatching the due slots of one pass: claim, decide, publish ours, mark them done.

For each due slot a replica claims the slot's fence in the slot store (a majority of
Redis masters, or the database: :mod:`celery_singleton_beat.stores`), publishes the
message, then marks the fence done and advances the entry's shared state; a replica that
loses the claim keeps the slot in view until the winner has marked it done. A winner that
dies between claim and done lets its claim expire; the replica that claims the slot next
takes the expired claim over and publishes again, with the same task id, which the worker
side drops as a duplicate::

    replica A: claim fire:report:t ok ── publish ── (SIGKILL)
    replica B: claim fire:report:t held ... held ... claim expired ── taken over ── publish
               (same task id uuid5(report, t): the worker runs it once)

What to do with a claimed slot (fire, or count it as missed) is decided by the pure
function in :mod:`celery_singleton_beat.core.decide`; how a slot is sent is the
scheduler's (:class:`Sender`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from celery_singleton_beat.beat.claims import ClaimKeeper
from celery_singleton_beat.beat.stopping import stop_signals_held
from celery_singleton_beat.beat.wakeups import Wakeups
from celery_singleton_beat.core import overlap
from celery_singleton_beat.core.batches import batches, name_size
from celery_singleton_beat.core.decide import ON_TIME, SlotView, Verdict, decide
from celery_singleton_beat.core.entries import Plan
from celery_singleton_beat.core.schema import ClaimStatus, Misfire, Outcome, Overlap, SkipReason
from celery_singleton_beat.core.share import Share
from celery_singleton_beat.core.slots import slot_label, slot_task_id, to_datetime
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.settings.config import Config
from celery_singleton_beat.sources.base import ScheduleSource
from celery_singleton_beat.stores.base import Claim, Fences, RunStates, SlotOutcome

logger = logging.getLogger(__name__)

#: Slots claimed per round trip when many are due at once.
CLAIM_CHUNK = 500
#: Seconds one pass spends dispatching at most; the due slots left wait for the next pass
#: (a few ms later), so that the loop heartbeats between the chunks of a large burst.
DISPATCH_BUDGET = 1.0
#: Due entries taken into one pass at most: about what a pass dispatches within its
#: budget; the others stay woken, in time order, for the passes that follow.
PASS_ENTRIES = 8 * CLAIM_CHUNK
#: Seconds another replica's progress may stand still before the slots it owns that are
#: late by the share grace are claimed (at least the grace): a busy live replica tells
#: its progress at least once a second, at each heartbeat.
STALL = 2.0
#: A slot decided within this long of its time is on time (ms).
ON_TIME_MS = int(ON_TIME * 1000)
#: Unhandled slots of one entry claimed one by one (the newest); older ones are counted.
BACKLOG = 64
#: The fence outcome of a slot its entry's overlap policy held back.
OVERLAPPED = Outcome.SKIPPED_OVERLAP.value


class Sender(Protocol):
    """How slots reach the broker: the scheduler's side of dispatching."""

    def publish_slot(self, plan: Plan, slot: int) -> str:
        """Send one slot (through Celery's ``apply_entry``); its task id."""

    def publish_batch(self) -> contextlib.AbstractContextManager[object]:
        """Messages published inside reach the broker together at its end."""

    def slot_published(self, plan: Plan, slot: int) -> None:
        """Called between publishing a slot and marking it done."""

    def broker_failed(self) -> None:
        """A publish failed: connect again before the next claim."""

    def cut_broker(self) -> object:
        """Shut the broker connection's sockets down (from the claim keeper's thread)."""


class PlanSlot(NamedTuple):
    """One slot of one entry's plan."""

    plan: Plan
    slot: int


class Firing(NamedTuple):
    """A claimed slot to publish."""

    plan: Plan
    slot: int
    late: float
    """Seconds past the slot's time."""
    counted: int
    """Older slots of the entry it stands for (left out of the claim, counted by number)."""


class Missed(NamedTuple):
    """A claimed slot that passed unsent, and how many slots it stands for."""

    slot: int
    number: int


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
    fire: list[Firing] = dataclasses.field(default_factory=list)
    """Slots to publish, with how late they are (s) and the older slots they stand for."""
    outcomes: list[SlotOutcome] = dataclasses.field(default_factory=list)
    """How each decided slot went, to mark its fence done."""
    skipped: dict[str, list[Missed]] = dataclasses.field(default_factory=dict)
    giveback: list[PlanSlot] = dataclasses.field(default_factory=list)
    retry: dict[str, int] = dataclasses.field(default_factory=dict)
    """Entries with held slots, and in how many ms to look at them again."""
    overlapped: list[PlanSlot] = dataclasses.field(default_factory=list)
    """Slots held back by their entry's overlap policy."""

    def to_publish(self) -> list[tuple[str, int]]:
        return [(plan.name, slot) for plan, slot, _late, _counted in self.fire]


class Dispatcher:
    """Dispatches the due slots of each pass, for one replica (see the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        fences: Fences,
        run_states: RunStates,
        source: ScheduleSource,
        wakeups: Wakeups,
        *,
        sender: Sender,
        may_publish: Callable[[], bool],
        replica: str,
    ) -> None:
        self.runtime = runtime
        self.config: Config = runtime.config
        self.fences = fences
        self.run_states = run_states
        self.source = source
        self.wakeups = wakeups
        self.sender = sender
        self.may_publish = may_publish
        """Whether this replica may publish now (in leader mode: while its lease holds)."""
        self.replica = replica
        self.share: Share | None = None
        """The entries this replica claims when their slots fall due (None: all of them);
        another replica's slots it claims once they are late by the share grace."""
        self.grace_ms = int(self.config.share_grace * 1000)
        self._before: tuple[Share | None, int] = (None, 0)
        """The share before the last change, and when it changed (ms)."""
        self.progress: Callable[[], tuple[float, Mapping[str, Mapping[str, Any]]]] | None = None
        """When read (monotonic s) and the live replicas' heartbeat info by id (``host:pid``),
        read lately: each sharing replica's ``through`` (see :meth:`progressed`)."""
        self.through: int | None = None
        """Every slot of this replica's share sent at or before this time (ms) is decided;
        None until a pass under the current share tells."""
        self._holding: dict[str, Plan] = {}
        """Entries with slots held (another replica's claim in flight, or given back)."""
        self.schedule_mark = ""
        """The schedule's :func:`~celery_singleton_beat.core.share.schedule_mark`."""
        self.moved = runtime.monotonic()
        """When this replica last moved on (a chunk decided, or nothing due): told in the
        heartbeat as seconds ago, it shows the others that this replica is not stuck
        while its ``through`` waits on a long burst."""
        self._parked: dict[str, list[PlanSlot]] = {}
        """Another replica's slots late by the grace, by owner, while that owner moves on."""
        self._stalled: dict[str, float] = {}
        """Each owner's seconds since it last moved on, as of the progress read."""
        self._unparked: dict[str, int | None] = {}
        """Each owner's ``through`` when its parked slots were last looked at."""
        self._stall = max(self.config.share_grace, STALL)

    @property
    def share_mark(self) -> str | None:
        """The share-out and the schedule this replica's ``through`` holds under: another
        replica takes its word only with the same mark (see :func:`schedule_mark`)."""
        if self.share is None:
            return None
        return f"{self.share.digest}:{self.schedule_mark}"

    def follow(self, share: Share, now: int) -> None:
        """Claim ``share``'s entries when due from now on."""
        self._before, self.share = (self.share, now), share
        self.through = None
        for items in self._parked.values():  # their owners may have changed
            for plan, _slot in items:
                self.wakeups.wake(plan, now)
        self._parked = {}

    def progressed(self, plans: Mapping[str, Plan], now: int) -> None:
        """After a pass at ``now``: how far this replica has decided its share. Every
        wake-up at or before ``now`` was popped, save those at or after the soonest left
        (a burst is a pass's worth at a time), and a held slot is not decided until its
        claim is: ``through`` stops before both. Told in the heartbeat, with the share it
        holds under, so that the other replicas let those slots go without claiming them
        (see :meth:`_left_to_owners`)."""
        if self.share is None:
            return
        soonest = self.wakeups.soonest()
        through = now if soonest is None else min(now, soonest - 1)
        if through == now and not self._holding:
            self.moved = self.runtime.monotonic()  # nothing due: this replica keeps up
        for name, plan in list(self._holding.items()):
            if not plan.held or plans.get(name) is not plan:
                del self._holding[name]
                continue
            through = min(through, _sent_at(plan, min(plan.held)) - 1)
        self.through = through

    def dispatch(self, due: list[Plan], now: int, *, ending: bool = False) -> None:
        """Claim, decide, publish and finish the due slots of ``due``, a chunk at a time.

        ``ending``: the plans are versions a schedule change replaces; their due slots are
        decided now by the replica that sees the change, whoever's share they are in (the
        plan is gone after this pass: a slot left for later would be lost), and within
        this pass whatever its time budget."""
        work: list[PlanSlot] = []
        theirs: list[PlanSlot] = []  # claimed after this replica's own share
        passes: dict[str, _Pass] = {}
        for plan in due:
            owns = ending or self._owns(plan)
            horizon = now if owns else now - self.grace_ms
            slots, left_out = plan.due(horizon, BACKLOG)
            if not slots:
                self.wakeups.wake(plan, self._wake_for(plan, plan.send_at(plan.next_slot)))
                continue
            fresh = [s for s in slots if s not in plan.held]
            oldest = fresh[0] if fresh else slots[0]
            passes[plan.name] = _Pass(plan.newest_due(horizon), left_out, oldest)
            (work if owns else theirs).extend(PlanSlot(plan, slot) for slot in slots)
        work.extend(self._left_to_owners(theirs))
        chunks = list(batches(work, _slot_size, count=CLAIM_CHUNK))
        done = 0
        until = self.runtime.monotonic() + DISPATCH_BUDGET
        try:
            for chunk in chunks:
                with stop_signals_held():
                    self._dispatch_chunk(chunk, passes, now)
                done += 1
                if not ending and self.runtime.monotonic() >= until:
                    break
        finally:
            # the store stopped answering, or the pass's time is up: the entries of the
            # chunks not reached are looked at again (at once, or once the store is back)
            for plan, _slot in (item for chunk in chunks[done:] for item in chunk):
                self.wakeups.wake(plan, plan.wake)

    def _left_to_owners(self, theirs: list[PlanSlot]) -> list[PlanSlot]:
        """Of another replica's slots late by the grace, those to claim now. A slot its
        owner says it decided (sent at or before the owner's ``through``, under the same
        share) is let go without a claim, as if the claim had found it done; one whose
        owner moved on within the stall time (it decided a chunk, or had nothing due) is
        parked until the owner decides it or stops. A dead, stopped or stuck owner's
        slots are claimed, as they were without a share-out."""
        if not theirs:
            return theirs
        owners, share = self._owners(), self.share
        if owners is None or share is None:
            return theirs
        left: list[PlanSlot] = []
        decided = _Batch("")
        for item in theirs:
            owner = share.owner(item.plan.name)
            through = owners.get(owner)
            if through is None:
                left.append(item)
            elif _sent_at(*item) <= through:
                _let_go(decided, item)
            elif self._moving(owner):
                self._parked.setdefault(owner, []).append(item)
            else:
                left.append(item)
        self._advance(decided)
        return left

    @property
    def parked(self) -> bool:
        return bool(self._parked)

    def unpark(self, now: int) -> None:
        """Parked slots whose owner has decided them are let go; those of an owner that
        stopped moving on, left the share or shares otherwise are woken to be claimed."""
        if not self._parked:
            return
        owners = self._owners()
        decided = _Batch("")
        for owner, items in list(self._parked.items()):
            through = None if owners is None else owners.get(owner)
            moving = through is not None and self._moving(owner)
            if moving and through == self._unparked.get(owner):
                continue  # nothing new from this owner since its slots were looked at
            self._unparked[owner] = through
            kept: list[PlanSlot] = []
            for item in items:
                if through is not None and _sent_at(*item) <= through:
                    _let_go(decided, item)
                elif moving:
                    kept.append(item)
                else:
                    self.wakeups.wake(item.plan, now)
            if kept:
                self._parked[owner] = kept
            else:
                del self._parked[owner]
        self._advance(decided)

    def _owners(self) -> dict[str, int] | None:
        """Each replica's ``through`` under this replica's share mark, noting how long each
        has stood still (see :meth:`_moving`); None if the progress cannot be read."""
        share, progress = self.share, self.progress
        if share is None or progress is None:
            return None
        try:
            read, seen = progress()
        except Exception as exc:  # unread: every late slot is claimed, as without it
            logger.debug("singleton beat: the replicas' progress is unread: %s", exc)
            return None
        since, digest = self.runtime.monotonic() - read, self.share_mark
        owners: dict[str, int] = {}
        self._stalled = {}
        for replica, info in seen.items():
            if info.get("share_of") != digest or info.get("through") is None:
                continue
            owners[replica] = int(info["through"])
            if info.get("moved") is not None and info.get("seen_ago") is not None:
                self._stalled[replica] = float(info["moved"]) + float(info["seen_ago"]) + since
        return owners

    def _moving(self, owner: str) -> bool:
        """Whether ``owner`` moved on within the stall time: as it told at its last
        heartbeat, plus the heartbeat's age on the store's clock and the read's since."""
        return self._stalled.get(owner, self._stall + 1) <= self._stall

    def _owns(self, plan: Plan) -> bool:
        return self.share is None or self.share.owns(plan.name)

    def _taken_over(self, plan: Plan, now: int) -> bool:
        """Whether ``plan``'s slots come to this replica from another's share: it is not
        this replica's, or it was not before the share moved (within the grace and the
        on-time second). Such a slot is decided as of the grace ago, so that a slot a dead
        owner left is on time when taken over after the grace."""
        if not self._owns(plan):
            return True
        before, moved = self._before
        return (
            before is not None
            and now - moved <= self.grace_ms + ON_TIME_MS
            and not before.owns(plan.name)
        )

    def wake_seen(self, plan: Plan, when: int | None, now: int) -> None:
        """Look at ``plan`` at ``when`` (ms), a time this replica just learned (the
        entry's progress read, the entry resumed). Another replica's entry is looked at
        the share grace after both ``when`` and ``now``: its owner learns it at about the
        same moment, and decides its slots first. ``when`` is a slot's time: the plan is
        woken at its send time (its jitter added)."""
        when = plan.send_at(when)
        if when is None or self._owns(plan):
            self.wakeups.wake(plan, when)
        else:
            self.wakeups.wake(plan, max(when, now) + self.grace_ms)

    def _wake_for(self, plan: Plan, slot: int | None) -> int | None:
        """When to look at ``plan`` for ``slot``: at once if this replica owns the entry,
        else once the slot is late by the share grace."""
        if slot is None or self._owns(plan):
            return slot
        return slot + self.grace_ms

    def _dispatch_chunk(self, work: Sequence[PlanSlot], passes: dict[str, _Pass], now: int) -> None:
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
        claims = self.fences.claim(fences, token, config.claim_ttl, config.fence_retention)
        if any(c.status is None for c in claims):
            self.fences.unclaim(fences, token)
            for plan, _slot in work:
                self.wakeups.wake(plan, plan.wake)
            errors = next(c.errors for c in claims if c.status is None)
            raise self.fences.unavailable("slots", errors)
        batch = _Batch(token)
        for (plan, slot), claim in zip(work, claims, strict=True):
            self._sort(batch, plan, slot, claim, this=passes[plan.name], now=now)
        self._hold_overlaps(batch, now)
        with ClaimKeeper(
            self.fences, token, config, batch.to_publish(), self.sender.cut_broker
        ) as keeper:
            self._publish_batch_of(batch, keeper)
        self._finish(batch)
        if not batch.giveback:
            self.moved = self.runtime.monotonic()

    def _sort(
        self, batch: _Batch, plan: Plan, slot: int, claim: Claim, *, this: _Pass, now: int
    ) -> None:
        """File one claimed (or not) slot of the chunk under what happens to it next."""
        batch.plans[plan.name] = plan
        if slot > batch.newest.get(plan.name, -1):
            batch.newest[plan.name] = slot
        if claim.status == ClaimStatus.DONE:
            plan.release(slot)
            return
        if claim.status == ClaimStatus.HELD:
            plan.hold(slot)
            batch.retry[plan.name] = random.randint(50, 250)
            return
        view = SlotView(
            slot, newest=slot == this.newest, resumed=claim.taken_over or slot in plan.held,
            offset=plan.offset(slot),
        )  # fmt: skip
        plan.release(slot)
        policy = plan.policy
        decided_at = now - self.grace_ms if self._taken_over(plan, now) else now
        verdict = decide(view, claim.last, decided_at, policy.misfire, policy.misfire_grace)
        if policy.paused:  # an old schedule that ends while paused: nothing is sent
            verdict = Verdict.SKIP
        counted = this.left_out if slot == this.oldest and not view.resumed else 0
        if verdict is Verdict.FIRE and not self.may_publish():
            batch.giveback.append(PlanSlot(plan, slot))
        elif verdict is Verdict.FIRE:
            late = max(0.0, (now - slot - view.offset) / 1000)
            batch.fire.append(Firing(plan, slot, late, counted))
        else:
            batch.skipped.setdefault(plan.name, []).append(Missed(slot, 1 + counted))
            batch.outcomes.append(SlotOutcome(plan.name, slot, verdict.value, 0, 1 + counted))

    def _hold_overlaps(self, batch: _Batch, now: int) -> None:
        """Slots whose entry's overlap policy holds them back (see :mod:`.overlap`) are
        decided ``skipped_overlap`` instead of sent."""
        watched = [item for item in batch.fire if item[0].policy.overlap != Overlap.ALLOW]
        if not watched:
            return
        try:
            states = self.run_states.run_states(sorted({plan.name for plan, *_rest in watched}))
        except Exception as exc:
            logger.warning("singleton beat: run states unreadable, sending: %s", exc)
            return
        for item in watched:
            plan, slot = item[0], item[1]
            policy = plan.policy
            if overlap.blocked(policy.overlap, states[plan.name], now, policy.overlap_ttl):
                batch.fire.remove(item)
                batch.overlapped.append(PlanSlot(plan, slot))
                batch.outcomes.append(SlotOutcome(plan.name, slot, OVERLAPPED, 0, 0))

    def _publish_batch_of(self, batch: _Batch, keeper: ClaimKeeper) -> None:
        """Publish the slots to fire in one broker batch; a slot counts as sent once the
        batch reached the broker. Those not sent are kept claimed and looked at again."""
        sent: list[tuple[Plan, int, int, events.SlotFired]] = []
        try:
            with self.sender.publish_batch():
                for plan, slot, late, counted in batch.fire:
                    if keeper.expired():
                        batch.giveback.append(PlanSlot(plan, slot))
                        continue
                    skipped = batch.skipped.get(plan.name, [])
                    coalesced = counted + sum(n for s, n in skipped if s < slot)
                    task_id = self.sender.publish_slot(plan, slot)
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
                extra=log_fields(self.replica, *(sent[0][:2] if sent else (None, None))),
            )  # fmt: skip
            self.sender.broker_failed()
            for plan, slot, _counted, _fired in sent:
                self._publish_failed(plan, slot, exc)
                batch.giveback.append(PlanSlot(plan, slot))
                batch.retry[plan.name] = 1000
            return
        for plan, slot, counted, fired in sent:
            self.sender.slot_published(plan, slot)
            events.emit(fired)
            batch.outcomes.append(SlotOutcome(plan.name, slot, Verdict.FIRE.value, 1, counted))

    def _finish(self, batch: _Batch) -> None:
        """Mark the decided slots done, give back the rest, count and wake the entries."""
        self.fences.unclaim([(p.name, s) for p, s in batch.giveback], batch.token)
        for plan, slot in batch.giveback:
            plan.hold(slot)
            batch.retry.setdefault(plan.name, 0)
        self._tell_source(batch.outcomes)
        marked = self.fences.finish(batch.outcomes, batch.token, self.config.fence_retention)
        lost = [o for o, ok in zip(batch.outcomes, marked, strict=True) if not ok]
        if lost:
            logger.warning(
                "singleton beat: %d slot(s) decided but not marked done on a majority (the "
                "claim expired or the masters did not answer), e.g. %r at %s; another replica "
                "may send them again with the same task id",
                len(lost), lost[0][0], slot_label(lost[0][1]),
                extra=log_fields(self.replica, batch.plans.get(lost[0][0]), lost[0][1]),
            )  # fmt: skip
        self._track_runs(batch, marked)
        for name, skipped in batch.skipped.items():
            self._report_skipped(batch.plans[name], skipped)
        self._advance(batch)

    def _advance(self, batch: _Batch) -> None:
        """Each entry of ``batch`` past its newest slot decided: woken for its next."""
        now = self.runtime.now_ms()
        for name, plan in batch.plans.items():
            if plan.held:
                self._holding[name] = plan
            else:
                self._holding.pop(name, None)
            after = plan.slots.next_after(batch.newest[name])
            if plan.next_slot is not None and (after is None or after > plan.next_slot):
                plan.next_slot = after
            wake = self._wake_for(plan, plan.send_at(plan.next_slot))
            if plan.held and name in batch.retry:
                retry = now + batch.retry[name]
                wake = retry if wake is None else min(wake, retry)
            elif plan.held:
                wake = now + 1000 if wake is None else min(wake, now + 1000)
            self.wakeups.wake(plan, wake)

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
                self.run_states.raise_run_states(sent, overlap.RETENTION)
            for plan, slot in batch.overlapped:
                if done.get((plan.name, slot)) == OVERLAPPED:
                    self.run_states.count_overlapped(plan.name, 1)
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

    def _report_skipped(self, plan: Plan, skipped: list[Missed]) -> None:
        count = sum(n for _slot, n in skipped)
        newest = max(slot for slot, _n in skipped)
        logger.warning(
            "singleton beat: entry %r missed %d slot(s) up to %s (misfire policy %s)",
            plan.name, count, slot_label(newest), plan.policy.misfire,
            extra=log_fields(self.replica, plan, newest),
        )  # fmt: skip
        events.emit(
            events.SlotSkipped(
                entry=plan.name, slot=to_datetime(newest), count=count,
                reason=SkipReason.MISFIRE.value, replica=self.replica,
            )
        )  # fmt: skip

    def _publish_failed(self, plan: Plan, slot: int, exc: BaseException) -> None:
        events.emit(
            events.SlotSkipped(
                entry=plan.name, slot=to_datetime(slot), count=1,
                reason=SkipReason.PUBLISH_FAILED.value, replica=self.replica,
                detail=f"{type(exc).__name__}: {exc}"[:500],
            )
        )  # fmt: skip


def _slot_size(item: PlanSlot) -> int:
    return name_size(item.plan.name)


def log_fields(replica: str, plan: Plan | None, slot: int | None) -> dict[str, Any]:
    """``extra=`` fields of a log line about one slot, for structured logs."""
    return {
        "replica": replica,
        "entry": plan.name if plan is not None else None,
        "slot": slot_label(slot) if slot is not None else None,
        "task_id": slot_task_id(plan.name, slot) if plan and slot is not None else None,
    }


def _sent_at(plan: Plan, slot: int) -> int:
    """When ``slot`` of ``plan`` is sent (its time, its jitter added)."""
    return plan.send_at(slot) or slot


def _let_go(decided: _Batch, item: PlanSlot) -> None:
    """Another replica's slot its owner decided: the entry moves past it, unclaimed."""
    plan, slot = item
    plan.release(slot)
    decided.plans[plan.name] = plan
    decided.newest[plan.name] = max(slot, decided.newest.get(plan.name, slot))

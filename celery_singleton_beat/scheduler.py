"""The Celery Beat scheduler that runs on every replica and dispatches each slot once.

Every replica runs ``celery beat -S singleton`` with the same schedule. For each due slot
a replica claims the slot's fence in the slot store (a majority of Redis masters, or the
database: :mod:`celery_singleton_beat.stores`), publishes the message, then marks the
fence done and advances the entry's shared state; a replica that loses the
claim leaves the slot to the winner. A winner that dies between claim and done lets its
claim expire and another replica publishes again, with the same task id, which the
worker side drops as a duplicate::

    replica A: claim fire:report:t ok ── publish ── (SIGKILL)
    replica B: claim fire:report:t held ... held ... claim expired ── claim ok ── publish
               (same task id uuid5(report, t): the worker runs it once)

In ``leader`` mode only the holder of a Redlock lease evaluates the schedule; the fences
still apply, so a leader that was paused past its lease cannot publish twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

from celery import beat
from celery.beat import _evaluate_entry_args, _evaluate_entry_kwargs

from celery_singleton_beat import broker, events
from celery_singleton_beat.decide import SlotView, Verdict, decide
from celery_singleton_beat.entries import Entry, Plan
from celery_singleton_beat.errors import StoreUnavailable
from celery_singleton_beat.health import HealthServer
from celery_singleton_beat.keeper import ClaimKeeper
from celery_singleton_beat.locks import Lease, Watchdog
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.schema import (
    LEADER_LOCK,
    ClaimStatus,
    Header,
    Misfire,
    Mode,
    Role,
    SkipReason,
)
from celery_singleton_beat.slots import slot_label, slot_task_id, to_datetime
from celery_singleton_beat.stores import Claim, SlotOutcome

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0
#: Heartbeats outlive this many missed beats before the replica drops off the list.
HEARTBEAT_TTL = 5.0
#: Longest sleep between two ticks: the loop heartbeats and elects at least this often.
LONGEST_SLEEP = 1.0
SLOT_HEADER = Header.SLOT.value
ENTRY_HEADER = Header.ENTRY.value
REPLICA_HEADER = Header.REPLICA.value
#: Slots claimed per round trip when many are due at once.
CLAIM_CHUNK = 500
#: Unhandled slots of one entry claimed one by one (the newest); older ones are counted.
BACKLOG = 64


@dataclasses.dataclass
class _Batch:
    """One claimed chunk: what to publish, to mark done, to give back and to look at again."""

    token: str
    plans: dict[str, Plan] = dataclasses.field(default_factory=dict)
    all_slots: list[tuple[Plan, int]] = dataclasses.field(default_factory=list)
    fire: list[tuple[Plan, int, float, int]] = dataclasses.field(default_factory=list)
    """Slots to publish, with how late they are (s) and the older slots they stand for."""
    outcomes: list[SlotOutcome] = dataclasses.field(default_factory=list)
    """How each decided slot went, to mark its fence done."""
    skipped: dict[str, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)
    giveback: list[tuple[Plan, int]] = dataclasses.field(default_factory=list)
    retry: dict[str, int] = dataclasses.field(default_factory=dict)
    """Entries with held slots, and in how many ms to look at them again."""

    def to_publish(self) -> list[tuple[str, int]]:
        return [(plan.name, slot) for plan, slot, _late, _counted in self.fire]


class Scheduler(beat.Scheduler):  # type: ignore[misc]
    """Highly available beat scheduler: ``beat_scheduler = "celery_singleton_beat.Scheduler"``."""

    Entry = Entry

    def __init__(self, app: Any, *args: Any, lazy: bool = False, **kwargs: Any) -> None:
        self.runtime = Runtime.of(app)
        self.config = self.runtime.config
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.role = Role.ACTIVE if self.config.mode == Mode.ACTIVE else Role.STANDBY
        self.store = self.runtime.store
        self.leader_lock = self.store.leader_lock(self.replica)
        self.plans: dict[str, Plan] = {}
        self._wakeups: list[tuple[int, str]] = []
        self._context: dict[str, tuple[int | None, int, int]] = {}
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
        super().__init__(app, *args, lazy=lazy, **kwargs)
        if not lazy and self.config.health_port is not None:
            self._health = HealthServer(
                self.config.health_port, self.alive, self.ready, _metrics_renderer()
            ).start()

    # -- Celery's Scheduler interface -------------------------------------------------

    @cached_property
    def connection(self) -> Any:
        """Beat's broker connection, with socket timeouts so that a publish is bounded."""
        return self.app.connection_for_write(
            transport_options=publish_timeouts(self.app.conf, self.config.publish_timeout)
        )

    def setup_schedule(self) -> None:
        self.install_default_entries(self.data)
        self.merge_inplace(self.app.conf.beat_schedule)
        grace = self.config.misfire_grace
        self.plans = {
            name: Plan.build(entry, self.app.timezone, grace)
            for name, entry in self.schedule.items()
        }
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
        return bool(self._ready), self._ready_detail

    # -- the loop ---------------------------------------------------------------------

    def _tick(self) -> float:
        monotonic = time.monotonic()
        if monotonic >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = monotonic + HEARTBEAT_EVERY
        if not self._lead(monotonic):
            return min(LONGEST_SLEEP, self._next_election - monotonic)
        if not self._initialized:
            self._load_state()
            self._warm_broker()
        now = self.runtime.now_ms()
        due = self._pop_due(now)
        if due:
            self._dispatch(due, now)
        return self._sleep_for(self.runtime.now_ms())

    def _heartbeat(self) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mode": self.config.mode,
            "role": self.role,
            "last_tick": self.runtime.clock(),
            "entries": len(self.plans),
        }
        alive = self.store.heartbeat(self.replica, info, HEARTBEAT_TTL, self.runtime.clock())
        events.emit(
            events.ReplicaSeen(
                host=str(info["host"]), pid=os.getpid(), mode=self.config.mode,
                role=self.role, ready=bool(self._ready), replicas=alive,
            )
        )  # fmt: skip

    def _load_state(self) -> None:
        """Read every entry's shared progress (and interval anchors) in one round trip."""
        plans = list(self.plans.values())
        now = self.runtime.now_ms()
        loaded = self.store.init([(p.name, p.every_ms) for p in plans], now)
        self._wakeups = []
        for plan, (last, anchor) in zip(plans, loaded, strict=True):
            if anchor is not None:
                plan.slots.anchor_ms = anchor  # type: ignore[attr-defined]
            plan.next_slot = plan.slots.next_after(last)
            self._wake(plan, plan.next_slot)
        self._initialized = True
        logger.info("singleton beat: %d entries loaded, %s", len(plans), self.role)

    def _warm_broker(self) -> None:
        try:
            broker.warm(self.producer)
        except Exception as exc:
            logger.warning("singleton beat: the broker does not answer yet: %s", exc)

    def _wake(self, plan: Plan, when: int | None) -> None:
        if when is not None:
            plan.wake = when
            heapq.heappush(self._wakeups, (when, plan.name))

    def _pop_due(self, now: int) -> list[Plan]:
        due: dict[str, Plan] = {}
        while self._wakeups and self._wakeups[0][0] <= now:
            when, name = heapq.heappop(self._wakeups)
            plan = self.plans.get(name)
            if plan is not None and plan.wake == when:
                due[name] = plan
        return list(due.values())

    def _sleep_for(self, now: int) -> float:
        if not self._wakeups:
            return LONGEST_SLEEP
        return max(0.0, min(LONGEST_SLEEP, (self._wakeups[0][0] - now) / 1000))

    # -- dispatching ------------------------------------------------------------------

    def _dispatch(self, due: list[Plan], now: int) -> None:
        work: list[tuple[Plan, int]] = []
        for plan in due:
            slots, left_out = plan.due(now, BACKLOG)
            if not slots:
                self._wake(plan, plan.next_slot)
                continue
            fresh = [s for s in slots if s not in plan.held]
            oldest = fresh[0] if fresh else slots[0]
            self._context[plan.name] = (plan.newest_due(now), left_out, oldest)
            work.extend((plan, slot) for slot in slots)
        chunks = [work[first : first + CLAIM_CHUNK] for first in range(0, len(work), CLAIM_CHUNK)]
        done = 0
        try:
            for chunk in chunks:
                self._dispatch_chunk(chunk, now)
                done += 1
        except BaseException:
            # the store stopped answering: the entries of this chunk and of those not
            # reached yet are looked at again once it is back, not dropped
            for plan, _slot in (item for chunk in chunks[done:] for item in chunk):
                self._wake(plan, plan.wake)
            raise
        finally:
            self._context.clear()

    def _dispatch_chunk(self, work: list[tuple[Plan, int]], now: int) -> None:
        """Claim a chunk of slots in one round trip, publish ours, finish them in one more.

        While the chunk is being published a keeper thread extends its claims, so that a
        slow broker cannot let a claim expire under a message in flight (which would let
        another replica send the slot again). The keeper stops at the publish timeout:
        past it the publish has failed, and the slots are given back and sent again, with
        the same task ids.
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
            self._sort(batch, plan, slot, claim, now)
        abort = functools.partial(broker.cut, self.producer)
        with ClaimKeeper(self.store, token, config, batch.to_publish(), abort) as keeper:
            self._publish_batch_of(batch, keeper)
        self._finish(batch)

    def _sort(self, batch: _Batch, plan: Plan, slot: int, claim: Claim, now: int) -> None:
        """File one claimed (or not) slot of the chunk under what happens to it next."""
        batch.plans[plan.name] = plan
        batch.all_slots.append((plan, slot))
        if claim.status == ClaimStatus.DONE:
            plan.held.discard(slot)
            return
        if claim.status == ClaimStatus.HELD:
            plan.held.add(slot)
            batch.retry[plan.name] = random.randint(50, 250)
            return
        newest, left_out, oldest = self._context.get(plan.name, (None, 0, slot))
        view = SlotView(slot, newest=slot == newest, resumed=claim.taken_over or slot in plan.held)
        plan.held.discard(slot)
        verdict = decide(view, claim.last, now, plan.policy.misfire, plan.policy.misfire_grace)
        counted = left_out if slot == oldest and not view.resumed else 0
        if verdict is Verdict.FIRE and not self._may_publish():
            batch.giveback.append((plan, slot))
        elif verdict is Verdict.FIRE:
            batch.fire.append((plan, slot, max(0.0, (now - slot) / 1000), counted))
        else:
            batch.skipped.setdefault(plan.name, []).append((slot, 1 + counted))
            batch.outcomes.append(SlotOutcome(plan.name, slot, verdict.value, 0, 1 + counted))

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
            )  # fmt: skip
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
        marked = self.store.finish(batch.outcomes, batch.token, self.config.fence_retention)
        lost = [o for o, ok in zip(batch.outcomes, marked, strict=True) if not ok]
        if lost:
            logger.warning(
                "singleton beat: %d slot(s) decided but not marked done on a majority (the "
                "claim expired or the masters did not answer), e.g. %r at %s; another replica "
                "may send them again with the same task id",
                len(lost), lost[0][0], slot_label(lost[0][1]),
            )  # fmt: skip
        for name, skipped in batch.skipped.items():
            self._report_skipped(batch.plans[name], skipped)
        now = self.runtime.now_ms()
        for name, plan in batch.plans.items():
            after = plan.slots.next_after(max(s for p, s in batch.all_slots if p is plan))
            if plan.next_slot is not None and (after is None or after > plan.next_slot):
                plan.next_slot = after
            wake = plan.next_slot
            if plan.held and name in batch.retry:
                retry = now + batch.retry[name]
                wake = retry if wake is None else min(wake, retry)
            elif plan.held:
                wake = now + 1000 if wake is None else min(wake, now + 1000)
            self._wake(plan, wake)

    def _report_skipped(self, plan: Plan, skipped: list[tuple[int, int]]) -> None:
        count = sum(n for _slot, n in skipped)
        newest = max(slot for slot, _n in skipped)
        logger.warning(
            "singleton beat: entry %r missed %d slot(s) up to %s (misfire policy %s)",
            plan.name, count, slot_label(newest), plan.policy.misfire,
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
        batch = getattr(self.producer, "batch", None)
        if batch is None:
            return contextlib.nullcontext()
        return batch(max_size=2 * CLAIM_CHUNK + 16)

    def _publish_failed(self, plan: Plan, slot: int, exc: BaseException) -> None:
        events.emit(
            events.SlotSkipped(
                entry=plan.name, slot=to_datetime(slot), count=1,
                reason=SkipReason.PUBLISH_FAILED.value, replica=self.replica,
                detail=f"{type(exc).__name__}: {exc}"[:500],
            )
        )  # fmt: skip

    def _publish(self, plan: Plan, slot: int) -> str:
        entry = plan.entry
        task_id = slot_task_id(plan.name, slot)
        options = entry.publish_options()
        headers = dict(options.pop("headers", None) or {})
        headers.update(
            {
                Header.BEAT_TASK.value: True,
                SLOT_HEADER: slot_label(slot),
                ENTRY_HEADER: plan.name,
                REPLICA_HEADER: self.replica,
            }
        )
        args = _evaluate_entry_args(entry.args)
        kwargs = _evaluate_entry_kwargs(entry.kwargs)
        logger.info(
            "Scheduler: Sending due task %s (%s) for slot %s",
            plan.name,
            entry.task,
            slot_label(slot),
        )
        task = self.app.tasks.get(entry.task)
        send = task.apply_async if task is not None else self._send_task(entry.task)
        send(args, kwargs, producer=self.producer, task_id=task_id, headers=headers, **options)
        return task_id

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

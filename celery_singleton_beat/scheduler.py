"""The Celery Beat scheduler that runs on every replica and dispatches each slot once.

Every replica runs ``celery beat -S singleton`` with the same schedule. For each due slot
a replica claims the slot's fence on a majority of Redis masters, publishes the message,
then marks the fence done and advances the entry's shared state; a replica that loses the
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

import heapq
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from celery import beat
from kombu.utils.url import maybe_sanitize_url

from celery_singleton_beat import events
from celery_singleton_beat._compat import (
    evaluate_entry_args,
    evaluate_entry_kwargs,
    producer_batch,
)
from celery_singleton_beat.config import Config
from celery_singleton_beat.entries import ON_TIME, Entry, Plan
from celery_singleton_beat.errors import QuorumUnavailable
from celery_singleton_beat.health import HealthServer
from celery_singleton_beat.locks import Lease, Redlock, Watchdog
from celery_singleton_beat.locks.nodes import Masters
from celery_singleton_beat.slots import slot_label, slot_task_id, to_datetime
from celery_singleton_beat.state import DONE, HELD, SlotStore

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0
#: Heartbeats outlive this many missed beats before the replica drops off the list.
HEARTBEAT_TTL = 5.0
#: Longest sleep between two ticks: the loop heartbeats and elects at least this often.
LONGEST_SLEEP = 1.0
SLOT_HEADER = "singleton_beat_slot"
ENTRY_HEADER = "singleton_beat_entry"
REPLICA_HEADER = "singleton_beat_replica"
#: Slots claimed per round trip when many are due at once.
CLAIM_CHUNK = 500
#: a decided slot for the fence: (entry, slot, outcome, published, skipped)
Outcome = tuple[str, int, str, int, int]
#: a slot whose message went into the broker batch, with its event
Sent = tuple[Plan, int, Outcome, "events.SlotFired"]


#: Wall clock in seconds since the epoch; slot times are compared with it. Tests replace it.
wall_clock: Callable[[], float] = time.time


def _now_ms() -> int:
    return int(wall_clock() * 1000)


class Scheduler(beat.Scheduler):  # type: ignore[misc]
    """Highly available beat scheduler: ``beat_scheduler = "celery_singleton_beat.Scheduler"``."""

    Entry = Entry

    def __init__(self, app: Any, *args: Any, lazy: bool = False, **kwargs: Any) -> None:
        self.config = Config.from_conf(app.conf)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.role = "active" if self.config.mode == "active" else "standby"
        self.masters = Masters.from_urls(self.config.redis_urls, self.config.node_timeout)
        self.store = SlotStore(self.masters, self.config.key_prefix)
        self.leader_lock = Redlock(self.masters, prefix=self.config.key_prefix, owner=self.replica)
        self.plans: dict[str, Plan] = {}
        self._wakeups: list[tuple[int, str]] = []
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
        except QuorumUnavailable as exc:
            self._set_ready(False, str(exc))
            self._failures += 1
            backoff = min(5.0, 0.25 * 2.0 ** min(self._failures, 5))
            return backoff * random.uniform(0.75, 1.25)
        self._failures = 0
        self._set_ready(True, "a majority of Redis masters answers")
        return delay

    def close(self) -> None:
        if self._health is not None:
            self._health.stop()
            self._health = None
        self._step_down("shutting down", release=True)
        try:
            self.store.forget_replica(self.replica)
        finally:
            self.masters.close()
            super().close()

    @property
    def info(self) -> str:
        masters = ", ".join(maybe_sanitize_url(url) for url in self.config.redis_urls)
        return (
            f"    . singleton beat -> mode {self.config.mode}, key prefix "
            f"{self.config.key_prefix!r}\n    . lock masters -> {masters} "
            f"(majority {self.masters.quorum} of {len(self.masters.nodes)})"
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
        now = _now_ms()
        due = self._pop_due(now)
        if due:
            self._dispatch(due, now)
        return self._sleep_for(_now_ms())

    def _heartbeat(self) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mode": self.config.mode,
            "role": self.role,
            "last_tick": wall_clock(),
            "entries": len(self.plans),
        }
        alive = self.store.heartbeat(self.replica, info, HEARTBEAT_TTL, wall_clock())
        events.emit(
            events.ReplicaSeen(
                host=str(info["host"]), pid=os.getpid(), mode=self.config.mode,
                role=self.role, ready=bool(self._ready), replicas=alive,
            )
        )  # fmt: skip

    def _load_state(self) -> None:
        """Read every entry's shared progress (and interval anchors) in one round trip."""
        plans = list(self.plans.values())
        now = _now_ms()
        loaded = self.store.init([(p.name, p.every_ms) for p in plans], now)
        self._wakeups = []
        for plan, (last, anchor) in zip(plans, loaded, strict=True):
            if anchor is not None:
                plan.slots.anchor_ms = anchor  # type: ignore[attr-defined]
            plan.next_slot = plan.slots.next_after(last)
            self._wake(plan, plan.next_slot)
        self._initialized = True
        logger.info("singleton beat: %d entries loaded, %s", len(plans), self.role)

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
        work = []
        for plan in due:
            slot = plan.newest_due(now)
            if slot is None:
                self._wake(plan, plan.next_slot)
            else:
                work.append((plan, slot))
        for first in range(0, len(work), CLAIM_CHUNK):
            self._dispatch_chunk(work[first : first + CLAIM_CHUNK], now)

    def _dispatch_chunk(self, work: list[tuple[Plan, int]], now: int) -> None:
        """Claim a chunk of slots in one round trip, publish ours, finish them in one more.

        Publishing stops once half the claim TTL has passed: the rest of the chunk is
        given back and tried again at once, so that no claim expires before its slot is
        marked done (which would let another replica publish it again).
        """
        token = f"{secrets.token_hex(8)}@{self.replica}"
        claimed_at = time.monotonic()
        claims = self.store.claim([(p.name, s) for p, s in work], token, self.config.claim_ttl)
        unavailable = [c for c in claims if c.status is None]
        if unavailable:
            self.store.unclaim([(p.name, s) for p, s in work], token)
            for plan, _slot in work:
                self._wake(plan, plan.wake)
            errors = unavailable[0].errors
            raise QuorumUnavailable("slots", self.masters.quorum, len(self.masters.nodes), errors)
        finished, not_ours, sent = self._publish_claimed(
            work, claims, claimed_at + self.config.claim_ttl / 2, now
        )
        for plan, slot, outcome, fired in sent:
            self._published(plan, slot)
            events.emit(fired)
            finished.append(outcome)
            self._advance(plan, slot)
        self.store.unclaim(not_ours, token)
        acks = self.store.finish(finished, self.config.fence_retention)
        if acks < self.masters.quorum:
            logger.warning(
                "singleton beat: %d slot(s) published but marked done on %d of %d masters; "
                "another replica may publish them again with the same task id",
                len(finished), acks, len(self.masters.nodes),
            )  # fmt: skip

    def _publish_claimed(
        self, work: list[tuple[Plan, int]], claims: list[Any], publish_until: float, now: int
    ) -> tuple[list[Outcome], list[tuple[str, int]], list[Sent]]:
        """Publish the claimed slots of a chunk in one broker batch.

        Returns the outcomes to mark done now, the claims to give back, and the slots
        whose messages reached the broker (marked done after their events are emitted).
        """
        finished: list[Outcome] = []
        not_ours: list[tuple[str, int]] = []
        sent: list[Sent] = []
        try:
            with self._publish_batch():
                for (plan, slot), claim in zip(work, claims, strict=True):
                    if claim.status == DONE:
                        self._advance(plan, slot)
                    elif claim.status == HELD:
                        not_ours.append((plan.name, slot))
                        self._wake(plan, _now_ms() + random.randint(50, 250))
                    elif time.monotonic() >= publish_until:
                        not_ours.append((plan.name, slot))
                        self._wake(plan, _now_ms())
                    else:
                        handled = self._handle(plan, slot, claim.last, now)
                        if handled is None:
                            not_ours.append((plan.name, slot))
                            self._wake(plan, _now_ms() + 1000)
                        elif handled[1] is None:
                            finished.append(handled[0])
                            self._advance(plan, slot)
                        else:
                            sent.append((plan, slot, handled[0], handled[1]))
        except Exception as exc:
            # the batch did not reach the broker: none of its messages counts as sent
            logger.exception("singleton beat: publishing %d message(s) failed", len(sent))
            for plan, slot, _outcome, _fired in sent:
                self._publish_failed(plan, slot, exc)
                not_ours.append((plan.name, slot))
                self._wake(plan, _now_ms() + 1000)
            sent = []
        return finished, not_ours, sent

    def _publish_batch(self) -> Any:
        """Messages published inside go to the broker together at its end (one pipeline on
        Redis, with kombu >= 5.7); brokers without batches publish each message at once."""
        return producer_batch(self.producer, max_size=2 * CLAIM_CHUNK + 16)

    def _publish_failed(self, plan: Plan, slot: int, exc: BaseException) -> None:
        events.emit(
            events.SlotSkipped(
                entry=plan.name, slot=to_datetime(slot), count=1, reason="publish_failed",
                replica=self.replica, detail=f"{type(exc).__name__}: {exc}"[:500],
            )
        )  # fmt: skip

    def _advance(self, plan: Plan, slot: int) -> None:
        plan.next_slot = plan.slots.next_after(slot)
        self._wake(plan, plan.next_slot)

    def _handle(
        self, plan: Plan, slot: int, last: int, now: int
    ) -> tuple[tuple[str, int, str, int, int], events.SlotFired | None] | None:
        """Decide a claimed slot: publish or skip it, counting the missed ones before it.

        Returns the fence outcome (name, slot, outcome, published, skipped) with the
        SlotFired event to emit once the message has reached the broker (None when nothing
        was published), or None when publishing failed and the slot should be tried again.
        """
        if last >= slot:
            return (plan.name, slot, "superseded", 0, 0), None
        missed = plan.missed_between(last, slot)
        late = (now - slot) / 1000
        fire = late <= ON_TIME or (
            plan.policy.misfire == "coalesce" and late <= plan.policy.misfire_grace
        )
        skipped = missed + (0 if fire else 1)
        if skipped:
            newest_skipped = slot if not fire else plan.slot_before(slot, after=last)
            logger.warning(
                "singleton beat: entry %r missed %d slot(s) up to %s (misfire policy %s)",
                plan.name, skipped, slot_label(newest_skipped), plan.policy.misfire,
            )  # fmt: skip
            events.emit(
                events.SlotSkipped(
                    entry=plan.name, slot=to_datetime(newest_skipped), count=skipped,
                    reason="misfire", replica=self.replica,
                )
            )  # fmt: skip
        if not fire:
            return (plan.name, slot, "skipped_misfire", 0, skipped), None
        if self.config.mode == "leader" and (self._lease is None or self._lease.remaining() <= 0):
            return None
        try:
            task_id = self._publish(plan, slot)
        except Exception as exc:
            logger.exception(
                "singleton beat: publishing %r for %s failed", plan.name, slot_label(slot)
            )
            self._publish_failed(plan, slot, exc)
            return None
        fired = events.SlotFired(
            entry=plan.name, slot=to_datetime(slot), task_id=task_id,
            task=plan.entry.task, replica=self.replica, late=max(0.0, late),
            coalesced=missed if plan.policy.misfire == "coalesce" else 0,
        )  # fmt: skip
        return (plan.name, slot, "dispatched", 1, skipped), fired

    def _publish(self, plan: Plan, slot: int) -> str:
        entry = plan.entry
        task_id = slot_task_id(plan.name, slot)
        options = entry.publish_options()
        headers = dict(options.pop("headers", None) or {})
        headers.update(
            {
                "celery_beat_task": True,
                SLOT_HEADER: slot_label(slot),
                ENTRY_HEADER: plan.name,
                REPLICA_HEADER: self.replica,
            }
        )
        args = evaluate_entry_args(entry.args)
        kwargs = evaluate_entry_kwargs(entry.kwargs)
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
        if self.config.mode == "active":
            return True
        lease = self._lease
        if lease is not None:
            if not lease.lost and lease.remaining() > 0:
                return True
            self._step_down("its lease expired or could not be extended")
        if monotonic < self._next_election:
            return False
        self._next_election = monotonic + min(0.5, self.config.lease_ttl / 3)
        lease = self.leader_lock.acquire("leader", ttl=self.config.lease_ttl)
        if lease is None:
            return False
        self._lease = lease
        self._watchdog = Watchdog(self.leader_lock, lease).start()
        self.role = "leader"
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
        self.role = "standby"
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
                "singleton beat: no majority of Redis masters reachable, publishing nothing "
                "until it is back: %s",
                detail,
            )
        elif previous is not None:
            logger.warning("singleton beat: a majority of Redis masters answers again")


def _metrics_renderer() -> Callable[[], tuple[bytes, str]] | None:
    """``/metrics`` when prometheus-client is installed (the ``[prometheus]`` extra)."""
    try:
        from celery_singleton_beat import metrics  # noqa: PLC0415  (optional extra)
    except ImportError:
        logger.info("singleton beat: prometheus-client is not installed; no /metrics")
        return None
    return metrics.install().render

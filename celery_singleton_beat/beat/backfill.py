"""Backfills, sent by the replicas: each slot of a past range that did not run, sent once.

A backfill request (:func:`celery_singleton_beat.schedule.backfill`) names an entry and
its slots; the replicas release them at the request's rate (:func:`released`, the same
on every replica) and each replica looks at the released slots it has not seen settled.
A slot goes through two fences, both claimed with the store's one claim:

- its backfill fence ``({name}@backfill, slot)``: whoever claims it decides the slot for
  every backfill; once done, no backfill looks at the slot again (however many requests
  overlap, and on a replica started later);
- its own fence ``(name, slot)``, the one beat claims: absent (beat coalesced the slot,
  left it out of a long backlog, or the entry was added after it) → claimed, sent,
  marked sent; done and sent (:meth:`~celery_singleton_beat.stores.base.Fences.outcomes`)
  → the slot ran, nothing is sent; done otherwise (skipped) → sent; held by beat, or
  not reached by beat yet (after the entry's ``last``) → given back, looked at again.

A slot is sent as beat would have sent it (the scheduler's ``publish_slot``: the slot's
task id ``uuid5(entry, slot)`` and headers), so that a claim taken over after a replica
died mid-publish sends the same message, which workers drop as a second copy::

    replica A: claim e@backfill:t, e:t ── publish ── (SIGKILL)
    replica B: claim e@backfill:t held ... expired ── taken over ── publish (same task id)
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from celery_singleton_beat.beat.claims import ClaimKeeper
from celery_singleton_beat.beat.dispatch import Sender
from celery_singleton_beat.beat.stopping import stop_signals_held
from celery_singleton_beat.core.entries import Plan
from celery_singleton_beat.core.schema import ClaimStatus, Outcome
from celery_singleton_beat.core.slots import to_datetime
from celery_singleton_beat.observe import events
from celery_singleton_beat.settings.config import Config
from celery_singleton_beat.sources.schedule_document import (
    BACKFILL,
    HAD_RUN,
    next_release,
    released,
)
from celery_singleton_beat.stores.base import Claim, Fence, Fences, SlotOutcome

logger = logging.getLogger(__name__)

#: Slots of one request looked at per pass (the rate bounds how many are released).
CHUNK = 200
#: How soon a slot given back (held, or not reached by beat yet) is looked at again (ms).
AGAIN_MS = 500
SENT = Outcome.DISPATCHED.value


class Backfiller:
    """Sends the released slots of each backfill request, for one replica."""

    def __init__(self, fences: Fences, config: Config, sender: Sender, replica: str) -> None:
        self.fences = fences
        self.config = config
        self.sender = sender
        self.replica = replica
        self.settled: dict[str, set[int]] = {}
        """Per request, the slots this replica knows settled (sent, or had run)."""

    def run(
        self, requests: Mapping[str, Mapping[str, Any]], plans: Mapping[str, Plan], now: int
    ) -> int | None:
        """One pass over the requests; when to pass again (ms), None when nothing is left."""
        for gone in set(self.settled) - set(requests):
            del self.settled[gone]
        wake: list[int] = []
        for request_id, request in sorted(requests.items()):
            plan = plans.get(request["entry"])
            if now > request["until"] or plan is None:
                continue
            settled = self.settled.setdefault(request_id, set())
            todo = [s for s in released(request, now) if s not in settled][:CHUNK]
            if todo and not plan.policy.paused:
                with stop_signals_held():  # claimed, sent and marked done, or none of it
                    settled.update(self._settle(plan, todo, now))
            if any(s not in settled for s in todo):
                wake.append(now + AGAIN_MS)
            following = next_release(request, now)
            if following is not None:
                wake.append(following)
        return min(wake, default=None)

    def _settle(self, plan: Plan, slots: list[int], now: int) -> set[int]:
        """Claim, send and mark done what is to send of ``slots``; the slots settled."""
        token = f"{secrets.token_hex(8)}@{self.replica}"
        name, mark = plan.name, plan.name + BACKFILL
        marks = self._claim([(mark, s) for s in slots], token)
        settled = {s for s, c in zip(slots, marks, strict=True) if c.status == ClaimStatus.DONE}
        mine = [s for s, c in zip(slots, marks, strict=True) if c.status == ClaimStatus.CLAIMED]
        if not mine:
            return settled
        own = self._claim([(name, s) for s in mine], token, also=[(mark, s) for s in mine])
        decided = [s for s, c in zip(mine, own, strict=True) if c.status == ClaimStatus.DONE]
        how = self.fences.outcomes([(name, s) for s in decided])
        ran = {s for s, outcome in zip(decided, how, strict=True) if outcome == SENT}
        send, giveback, outcomes = [], [], []
        for slot, claim in zip(mine, own, strict=True):
            if slot in ran:
                outcomes.append(SlotOutcome(mark, slot, HAD_RUN, 0, 0))
            elif claim.status == ClaimStatus.DONE or _ours(claim, slot):
                send.append(slot)
            else:
                giveback.append(slot)
        self.fences.unclaim([f for s in giveback for f in ((mark, s), (name, s))], token)
        sent = self._send(plan, send, set(decided), token, now)
        for slot in sent:
            outcomes.append(SlotOutcome(mark, slot, SENT, 0, 0))
            if slot not in decided:
                outcomes.append(SlotOutcome(name, slot, SENT, 1, 0))
        marked = self.fences.finish(outcomes, token, self.config.fence_retention)
        settled.update(
            o.slot for o, ok in zip(outcomes, marked, strict=True) if ok and o.entry == mark
        )
        return settled

    def _claim(self, fences: list[Fence], token: str, also: Sequence[Fence] = ()) -> list[Claim]:
        """Claim ``fences``; when the store does not answer, give them (and ``also``) back
        and raise."""
        config = self.config
        claims = self.fences.claim(fences, token, config.claim_ttl, config.fence_retention)
        if any(c.status is None for c in claims):
            self.fences.unclaim([*fences, *also], token)
            errors = next(c.errors for c in claims if c.status is None)
            raise self.fences.unavailable("backfilled slots", errors)
        return claims

    def _send(
        self, plan: Plan, slots: list[int], decided: set[int], token: str, now: int
    ) -> list[int]:
        """Publish ``slots`` in one broker batch while our claims on them are kept (a slot
        of ``decided`` has its backfill fence claimed only); the slots sent (none when the
        batch failed: their claims are given back, and they are sent again)."""
        if not slots:
            return []
        fences = [(plan.name + BACKFILL, s) for s in slots]
        fences += [(plan.name, s) for s in slots if s not in decided]
        sent: list[tuple[int, str]] = []
        try:
            with (
                ClaimKeeper(
                    self.fences, token, self.config, fences, self.sender.cut_broker
                ) as keeper,
                self.sender.publish_batch(),
            ):
                for slot in slots:
                    if keeper.expired():
                        raise TimeoutError("the claims were not kept within the publish timeout")
                    sent.append((slot, self.sender.publish_slot(plan, slot)))
        except Exception as exc:
            logger.error(
                "singleton beat: backfill of entry %r: publishing %d message(s) failed, sending "
                "them again: %s: %s", plan.name, len(slots), type(exc).__name__, exc,
            )  # fmt: skip
            self.sender.broker_failed()
            self.fences.unclaim(fences, token)
            return []
        for slot, task_id in sent:
            events.emit(
                events.SlotFired(
                    entry=plan.name, slot=to_datetime(slot), task_id=task_id,
                    task=plan.entry.task, replica=self.replica, late=max(0.0, (now - slot) / 1000),
                )
            )  # fmt: skip
        logger.info("singleton beat: backfill of entry %r: %d slot(s) sent", plan.name, len(sent))
        return [slot for slot, _task_id in sent]


def _ours(claim: Claim, slot: int) -> bool:
    """Claimed by us, and a slot beat has passed (one after the entry's ``last`` is beat's
    to decide first: its misfire policy, then a backfill if it was skipped)."""
    return claim.status == ClaimStatus.CLAIMED and slot <= claim.last

"""What a change of the schedule means: the new plans sorted against the running ones.

:func:`compare` sorts the plans built from a source's new read (see
:mod:`celery_singleton_beat.sources.watcher` for when a source is read):

- *added* (a name not scheduled before, or scheduled again after being disabled) and
  *changed* (its slots differ: another schedule, timezone or bounds) plans start from
  their first slot after the moment the change is seen; a changed entry's old slots up
  to that moment are still decided by the old plan (sent, held back or counted missed),
  so that an edit seen just after a slot fell due loses no slot; the slots an entry
  dispatched keep their fences (``fire:{name}:{slot}``), so a slot both schedules share
  is not sent twice;
- *kept* plans (same slots) keep their progress and take the new task, arguments,
  options and policy (a pause or a resume);
- *removed* plans stop, once their slots due up to that moment are decided.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from celery_singleton_beat.core.entries import Plan


@dataclasses.dataclass
class Changes:
    """How a newly read schedule differs from the running plans."""

    plans: dict[str, Plan]
    added: list[Plan] = dataclasses.field(default_factory=list)
    changed: list[Plan] = dataclasses.field(default_factory=list)
    resumed: list[Plan] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    updated: int = 0

    @property
    def fresh(self) -> list[Plan]:
        """Plans that start from their next slot after now."""
        return self.added + self.changed

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.resumed or self.removed or self.updated)


def compare(running: Mapping[str, Plan], built: Mapping[str, Plan]) -> Changes:
    """Sort ``built`` (plans from a new read) against the ``running`` ones."""
    changes = Changes(plans={})
    for name, plan in built.items():
        old = running.get(name)
        if old is plan:  # an entry the source gave unchanged keeps its very plan
            changes.plans[name] = plan
            continue
        if old is None:
            changes.added.append(plan)
        elif _slots_of(old) != _slots_of(plan):
            changes.changed.append(plan)
        else:
            changes.plans[name] = _keep(changes, old, plan)
            continue
        changes.plans[name] = plan
    changes.removed = sorted(set(running) - set(built))
    return changes


def _keep(changes: Changes, old: Plan, new: Plan) -> Plan:
    """The running plan, with the new entry's task, arguments, options and policy."""
    if old.policy.paused and not new.policy.paused:
        changes.resumed.append(old)
    if old.entry is not new.entry:
        changes.updated += _differs(old, new)
    old.entry, old.policy = new.entry, new.policy
    return old


def _slots_of(plan: Plan) -> str:
    return plan.slots.fingerprint()


def _differs(old: Plan, new: Plan) -> int:
    a, b = old.entry, new.entry
    same = (a.task, a.args, a.kwargs, a.options, old.policy) == (
        b.task, b.args, b.kwargs, b.options, new.policy,
    )  # fmt: skip
    return 0 if same else 1

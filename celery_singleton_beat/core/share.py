"""Which live replica owns each entry: rendezvous (highest random weight) hashing.

Each replica that takes a share scores every entry against every replica in the live
set and owns the entries it scores highest on. Every replica computes the same owners
from the same set, with nothing stored; when a replica joins or leaves, only the entries
it owns move (a third of them with three replicas, not all of them).

The owner claims an entry's slot when it falls due; the other replicas look at it once
it is late by the grace, and claim it only if the owner does not keep up (its heartbeat
tells how far it has decided its share and when it last moved on: see
:class:`celery_singleton_beat.beat.dispatch.Dispatcher`), so a dead or stopped owner's
slots are taken over soon after the grace. The claim decides who sends a slot, as always:
owners that disagree for a moment (one replica sees a new member before another) cost a
claim, never a second message::

    r1 (owner of "report"): claim fire:report:t at t ── publish ── done; through t
    r2, r3:                 at t + grace: r1 decided t, nothing claimed

    r1 SIGKILLed
    r2, r3:                 r1 stopped moving on: claim fire:report:t, one wins, publishes
    r1's heartbeat expires: r2 or r3 owns "report" from then on and claims it at t
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from celery_singleton_beat.core.entries import Plan

_KEY_BYTES = 32


class Share:
    """The entries ``me`` owns among the live ``replicas`` (ids such as ``host:pid``).

    A replica that is not in the set (its heartbeat not counted yet, or the set unknown)
    owns every entry: it claims each slot when it falls due, as without a share-out.
    """

    def __init__(self, me: str, replicas: Sequence[str]) -> None:
        self.me = me
        self.replicas = tuple(sorted(set(replicas)))
        self._everything = me not in self.replicas or len(self.replicas) == 1
        self._keys = [_key(replica) for replica in self.replicas]
        self._mine = self.replicas.index(me) if not self._everything else 0
        self.digest = hashlib.blake2b("\n".join(self.replicas).encode(), digest_size=8).hexdigest()
        """Names the set of replicas, so that two replicas can tell they share alike."""
        self._owners: dict[str, int] = {}
        """Each entry's owner once scored (a pass asks for it several times)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Share) and (self.me, self.replicas) == (other.me, other.replicas)

    def __hash__(self) -> int:
        return hash((self.me, self.replicas))

    def owns(self, name: str) -> bool:
        """Whether ``me`` claims ``name``'s slots when they fall due."""
        if self._everything:
            return True
        return self.owner_index(name) == self._mine

    def owner(self, name: str) -> str:
        """The live replica that owns ``name`` (``me`` when the set does not count it)."""
        if self._everything:
            return self.me
        return self.replicas[self.owner_index(name)]

    def owner_index(self, name: str) -> int:
        found = self._owners.get(name)
        if found is None:
            found = self._owners[name] = self._score(name)
        return found

    def _score(self, name: str) -> int:
        data = name.encode()
        best, found = b"", 0
        for index, key in enumerate(self._keys):
            score = hashlib.blake2b(data, key=key, digest_size=8).digest()
            if score > best:
                best, found = score, index
        return found


def _key(replica: str) -> bytes:
    """A replica's hashing key (blake2b keys are at most 64 bytes; ids may be longer)."""
    return hashlib.blake2b(replica.encode(), digest_size=_KEY_BYTES).digest()


def schedule_mark(plans: Mapping[str, Plan]) -> str:
    """Names a schedule by each entry's name and slots, in any order: two replicas whose
    marks agree schedule the same slots, so one may take the other's word that a slot of
    its share is decided (a replica that does not know an entry, or knows other slots of
    it, as in a rolling deploy or the second after an edit, has another mark)."""
    mark = 0
    for name, plan in plans.items():
        text = f"{name}\x00{plan.slots.fingerprint()}".encode()
        mark ^= int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")
    return f"{mark:016x}"

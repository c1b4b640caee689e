"""The overlap policy: whether beat sends an entry's slot while an earlier run is not done.

Per entry (``options["singleton_beat"]["overlap"]``):

- ``allow`` (default): every slot is sent;
- ``skip``: no slot is sent while the entry's previous run waits or runs;
- ``buffer_one``: a slot is sent while the previous run runs, so that one waits behind it,
  but not while one is waiting already.

Beat decides it when it claims the slot, from each entry's run state in the slot store
(on Redis ``runstate:{entry}``, a hash of slot times, each only ever raised so that the order the
writes arrive in does not matter): ``queued`` written by the replica that sent a slot,
``started`` and ``finished`` by the worker that ran it
(:func:`celery_singleton_beat.tasks.overlap.install`). A slot held back
is marked done as ``skipped_overlap`` and counted in ``overlapped``; it is not a duplicate
and not a missed slot::

    beat:   send 10:00 (queued 10:00) ── 10:01: queued > finished → skipped_overlap
    worker:    start 10:00 (started 10:00) ──────── finish (finished 10:00)
    beat:                                     10:02: queued = finished → send 10:02

A run state older than ``overlap_ttl`` (a lost message, a killed worker) blocks nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from celery_singleton_beat.core.schema import Header, Overlap

POLICIES = tuple(o.value for o in Overlap)
#: Beat adds this header to a slot of an entry with an overlap policy; its worker then
#: records the run's start and end.
TRACK_HEADER = Header.TRACK_RUN.value
#: How long a run state is kept after its last write (s).
RETENTION = 7 * 86400.0


def blocked(policy: str, state: Mapping[str, int], now: int, ttl: float) -> bool:
    """Whether ``policy`` holds back a slot claimed at ``now`` (ms), given the entry's run
    state (slot times in ms); a state whose newest sent slot is older than ``ttl`` (s)
    holds back nothing."""
    queued = state.get("queued", 0)
    if policy == "allow" or not queued or now - queued > ttl * 1000:
        return False
    if policy == "skip":
        return queued > state.get("finished", 0)
    return queued > state.get("started", 0)


def parse_slot(label: str) -> int:
    """A slot header (``2026-11-24T23:00:00.000Z``) back to ms since the epoch."""
    moment = dt.datetime.strptime(label, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return round(moment.timestamp() * 1000)

"""Another replica's slots late by the share grace are claimed only when their owner
does not keep up: a live owner tells in its heartbeat how far it has decided its share
(``through``) and how long ago it last moved on (``moved``). Slots it decided are let go
unclaimed; slots it has not reached while it moves on wait for it; once it stalls, or
when it schedules otherwise (another mark), they are claimed and sent, as without a
share-out (the scheduler in-process on the memory store, the other replica's heartbeat
written by the test)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

from celery import Celery

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.share import Share
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.stores import MemorySlotStore
from celery_singleton_beat.stores.base import Claim, Fence

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()
OTHER = "elsewhere:1"


class Watched(MemorySlotStore):
    """Counts the slots claimed; another sharing replica's heartbeat is the test's."""

    other: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.claimed: list[str] = []

    def claim(
        self, fences: Sequence[Fence], token: str, ttl: float, retention: float
    ) -> list[Claim]:
        self.claimed += [name for name, _slot in fences]
        return super().claim(fences, token, ttl, retention)

    def replicas(self) -> list[dict[str, Any]]:
        return [*super().replicas(), {"host": "elsewhere", "pid": 1, **Watched.other}]


def test_a_live_owner_s_slots_are_let_go_or_wait_and_a_stalled_owner_s_are_claimed(
    fired: list[events.SlotFired],
) -> None:
    app = Celery("share-progress", broker="memory://")
    schedule = {f"e{i}": {"task": "t", "schedule": 10.0} for i in range(8)}
    app.conf.update(
        singleton_beat_store=f"{__name__}.Watched",
        singleton_beat_share_grace=1.0,
        beat_schedule=schedule,
    )
    now = [START]
    Runtime.of(app).clock = lambda: now[0]
    sched = Scheduler(app=app)
    store = sched.store
    assert isinstance(store, Watched)
    try:
        sched.tick()  # registers the entries, heartbeats alone
        share = Share(sched.replica, [sched.replica, OTHER])
        sched.dispatcher.follow(share, int(now[0] * 1000))
        mine = sorted(e for e in schedule if share.owns(e))
        theirs = sorted(e for e in schedule if not share.owns(e))
        assert mine and theirs

        def other(through: float, moved: float, mark: str | None = None) -> None:
            Watched.other = {
                "share": True, "share_of": mark or sched.dispatcher.share_mark,
                "through": int(through * 1000), "moved": moved, "seen_ago": 0.2,
            }  # fmt: skip
            sched._progress_seen = None  # read again at once

        # 00:00:10: the other replica decided its share through 00:00:10.5
        other(START + 10.5, 0.1)
        now[0] = START + 10.2
        sched.tick()
        now[0] = START + 11.3  # its slots late by the grace
        sched.tick()
        assert sorted(store.claimed) == mine, "only this replica's own share is claimed"
        assert all(sched.plans[e].next_slot == (START + 20) * 1000 for e in theirs)

        # 00:00:20: the other replica moves on but has not reached its slots: they wait
        store.claimed.clear()
        other(START + 19.9, 0.1)
        now[0] = START + 20.2
        sched.tick()
        now[0] = START + 21.3
        sched.tick()
        assert sorted(store.claimed) == mine
        # it stalls (last moved on 5 s ago): its slots are claimed and sent here
        other(START + 19.9, 5.0)
        now[0] = START + 21.6
        sched.tick()
        sched.tick()
        assert sorted(store.claimed) == sorted(mine + theirs)

        # 00:00:30: the other replica has decided its share, but of another schedule (an
        # entry it does not know, other slots): its word is not taken, the slots are claimed
        store.claimed.clear()
        other(START + 30.5, 0.1, mark=f"{share.digest}:{'0' * 16}")
        now[0] = START + 30.2
        sched.tick()
        now[0] = START + 31.3
        sched.tick()
    finally:
        sched.close()
    assert sorted(store.claimed) == sorted(mine + theirs)
    sent = {(e.entry, e.slot.timestamp() - START) for e in fired}
    assert {(e, 20.0) for e in schedule} | {(e, 30.0) for e in schedule} <= sent
    assert not {(e, 10.0) for e in theirs} & sent, "decided by their owner, not sent here"

"""Backfills on the replicas' side, against each store: what is sent, once, and paced.

Two ``Backfiller`` objects stand for two replicas on one store; their sender records
what each would publish. The multi-process proof is ``test_backfill_replicas.py``.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat.beat.backfill import Backfiller
from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.core.schema import Outcome
from celery_singleton_beat.core.slots import slot_task_id
from celery_singleton_beat.settings.config import Config
from celery_singleton_beat.sources.schedule_document import (
    BACKFILL,
    HAD_RUN,
    next_release,
    released,
)
from celery_singleton_beat.stores import MemorySlotStore, SlotOutcome, SlotStore
from celery_singleton_beat.stores.redis import RedisSlotStore
from celery_singleton_beat.testing import RedisServer
from tests.support.databases import sqlalchemy_database

MINUTE = 60_000
BASE = 1_800_000_000_000 - 1_800_000_000_000 % MINUTE
#: Thirty slots of a one-minute entry: 0-9 ran, 10-19 were skipped, 20-29 have no fence.
SLOTS = [BASE + i * MINUTE for i in range(30)]
NOW = SLOTS[-1] + 5 * MINUTE
SENT, MISSED = Outcome.DISPATCHED.value, Outcome.SKIPPED_MISFIRE.value


@pytest.fixture(params=["memory", "redis-3", "sqlalchemy-sqlite"])
def store(
    request: pytest.FixtureRequest, redis_cluster: Callable[[int], list[RedisServer]]
) -> Iterator[SlotStore]:
    kind, _, detail = request.param.partition("-")
    if kind == "sqlalchemy":
        from celery_singleton_beat.stores.sqlalchemy import SqlAlchemySlotStore

        made: SlotStore = SqlAlchemySlotStore(sqlalchemy_database(request, detail))
    elif kind == "memory":
        made = MemorySlotStore()
    else:
        servers = redis_cluster(int(detail))
        made = RedisSlotStore(Masters.from_urls([s.url for s in servers], 1.0), "backfill:")
    yield made
    made.close()


class Recorder:
    """A replica's sender: the slots it would publish, with their task ids."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def publish_slot(self, plan: Plan, slot: int) -> str:
        self.sent.append((slot, slot_task_id(plan.name, slot)))
        return self.sent[-1][1]

    def publish_batch(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def slot_published(self, plan: Plan, slot: int) -> None:
        pass

    def broker_failed(self) -> None:
        pass

    def cut_broker(self) -> object:
        return None


def config() -> Config:
    app = Celery("backfill-tests")
    app.conf.update(singleton_beat_claim_ttl=0.5, singleton_beat_redis_urls=["redis://127.0.0.1:1"])
    return Config.from_conf(app.conf)


def plan(**options: Any) -> Plan:
    app = Celery("backfill-tests")
    entry = Entry(name="report", task="t", schedule=60.0, app=app, options=options)
    return Plan.build(entry, app.timezone, 300.0)


def history(store: SlotStore) -> None:
    """The entry as beat left it: slots 0-9 sent, 10-19 skipped, 20-29 never claimed."""
    store.init([("report", MINUTE)], now=SLOTS[-1] + MINUTE)
    decided = SLOTS[:20]
    store.claim([("report", s) for s in decided], "beat", ttl=5, retention=3600)
    store.finish(
        [SlotOutcome("report", s, SENT if i < 10 else MISSED, int(i < 10), 0)
         for i, s in enumerate(decided)], "beat", 3600,
    )  # fmt: skip


def request(slots: list[int], rate: float = 1000.0, at: int = NOW - MINUTE) -> dict[str, Any]:
    return {"entry": "report", "slots": slots, "rate": rate, "at": at, "until": at + 3_600_000}


def test_two_replicas_on_overlapping_backfills_send_each_slot_that_did_not_run_once(
    store: SlotStore,
) -> None:
    history(store)
    requests = {"a": request(SLOTS[:20]), "b": request(SLOTS[5:])}
    plans = {"report": plan()}
    senders = [Recorder(), Recorder()]
    replicas = [Backfiller(store, config(), sender, f"r{i}") for i, sender in enumerate(senders)]
    for _ in range(3):
        for replica in replicas:
            replica.run(requests, plans, NOW)
    sent = Counter(slot for sender in senders for slot, _task_id in sender.sent)
    assert sent == Counter(SLOTS[10:])
    task_ids = {task_id for sender in senders for _slot, task_id in sender.sent}
    assert task_ids == {slot_task_id("report", s) for s in SLOTS[10:]}
    marks = store.outcomes([("report" + BACKFILL, s) for s in SLOTS])
    assert marks == [HAD_RUN] * 10 + [SENT] * 20
    assert (
        store.outcomes([("report", s) for s in SLOTS]) == [SENT] * 10 + [MISSED] * 10 + [SENT] * 10
    )
    assert store.entry_counts("report")["dispatched"] == 20


def test_a_replica_started_later_sends_nothing_of_a_settled_backfill(store: SlotStore) -> None:
    history(store)
    requests, plans = {"a": request(SLOTS)}, {"report": plan()}
    Backfiller(store, config(), Recorder(), "r1").run(requests, plans, NOW)
    later = Recorder()
    assert Backfiller(store, config(), later, "r2").run(requests, plans, NOW) is None
    assert later.sent == []


def test_a_slot_beat_holds_or_has_not_reached_is_left_to_beat_first(store: SlotStore) -> None:
    history(store)
    ahead = SLOTS[-1] + 2 * MINUTE  # after the entry's last slot: beat's to decide
    store.claim([("report", SLOTS[25])], "beat", ttl=5, retention=3600)  # beat deciding it
    sender = Recorder()
    replica = Backfiller(store, config(), sender, "r1")
    requests, plans = {"a": request([SLOTS[25], ahead])}, {"report": plan()}
    assert replica.run(requests, plans, NOW) == NOW + 500
    assert sender.sent == []
    store.finish([SlotOutcome("report", SLOTS[25], SENT, 1, 0)], "beat", 3600)
    store.claim([("report", ahead)], "beat", ttl=5, retention=3600)
    store.finish([SlotOutcome("report", ahead, MISSED, 0, 1)], "beat", 3600)
    assert replica.run(requests, plans, NOW + 500) is None
    assert [slot for slot, _task_id in sender.sent] == [ahead]
    assert store.outcomes([("report" + BACKFILL, s) for s in (SLOTS[25], ahead)]) == [
        HAD_RUN,
        SENT,
    ]


def test_a_paused_entry_backfills_nothing_until_resumed(store: SlotStore) -> None:
    history(store)
    sender = Recorder()
    replica = Backfiller(store, config(), sender, "r1")
    requests = {"a": request(SLOTS[20:])}
    replica.run(requests, {"report": plan(singleton_beat={"paused": True})}, NOW)
    assert sender.sent == []
    replica.run(requests, {"report": plan()}, NOW)
    assert [slot for slot, _task_id in sender.sent] == SLOTS[20:]


def test_a_backfill_past_its_time_is_left_alone(store: SlotStore) -> None:
    history(store)
    sender = Recorder()
    late = request(SLOTS[20:])
    Backfiller(store, config(), sender, "r1").run(
        {"a": late}, {"report": plan()}, late["until"] + 1
    )
    assert sender.sent == []


def test_slots_come_out_at_the_rate_the_same_on_every_replica() -> None:
    paced = request(SLOTS[:5], rate=2.0, at=NOW)
    assert released(paced, NOW - 1) == []
    assert released(paced, NOW) == SLOTS[:1]
    assert released(paced, NOW + 999) == SLOTS[:2]
    assert released(paced, NOW + 1000) == SLOTS[:3]
    assert next_release(paced, NOW + 1000) == NOW + 1501
    assert released(paced, NOW + 60_000) == SLOTS[:5]
    assert next_release(paced, NOW + 60_000) is None

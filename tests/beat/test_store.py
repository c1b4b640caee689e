"""The slot store's scripts on real masters: claims, take-overs, finishing, and an entry's
progress when a master restarted empty."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from celery_singleton_beat.locks.nodes import Masters
from celery_singleton_beat.state import CLAIMED, DONE, HELD, SlotStore
from celery_singleton_beat.testing import RedisServer


@pytest.fixture
def store(redis_cluster: Callable[[int], list[RedisServer]]) -> tuple[SlotStore, list]:
    masters = redis_cluster(3)
    nodes = Masters.from_urls([m.url for m in masters], 0.2)
    yield SlotStore(nodes, "t:"), masters
    nodes.close()


def test_a_master_restarted_empty_does_not_vote_on_an_entry_it_does_not_know(store) -> None:
    slots, masters = store
    assert slots.init([("e", None)], now=1_000) == [(1_000, None)]
    claim = slots.claim([("e", 5_000)], "a", ttl=1, retention=60)[0]
    assert claim.status == CLAIMED
    assert slots.finish([("e", 5_000, "dispatched", 1, 0)], "a", 60) == [True]
    masters[0].restart()
    assert slots.init([("e", None)], now=90_000) == [(5_000, None)]
    assert masters[0].client().hget("t:entry:e", "last") == b"5000", "it learns the value back"


def test_a_new_entry_starts_where_it_was_first_seen(store) -> None:
    slots, _masters = store
    assert slots.init([("new", 1_000)], now=12_345) == [(12_345, 12_000)]
    assert slots.init([("new", 1_000)], now=99_999) == [(12_345, 12_000)]


def test_a_live_claim_is_held_and_an_expired_one_is_taken_over(store) -> None:
    slots, _masters = store
    assert slots.claim([("e", 1)], "a", ttl=0.2, retention=60)[0].status == CLAIMED
    held = slots.claim([("e", 1)], "b", ttl=0.2, retention=60)[0]
    assert (held.status, held.taken_over) == (HELD, False)
    time.sleep(0.3)
    taken = slots.claim([("e", 1)], "b", ttl=0.2, retention=60)[0]
    assert (taken.status, taken.taken_over) == (CLAIMED, True)


def test_finishing_needs_the_claim_still_ours(store) -> None:
    slots, _masters = store
    slots.claim([("e", 1)], "a", ttl=0.1, retention=60)
    time.sleep(0.2)
    slots.claim([("e", 1)], "b", ttl=5, retention=60)
    assert slots.finish([("e", 1, "dispatched", 1, 0)], "a", 60) == [False]
    assert slots.finish([("e", 1, "dispatched", 1, 0)], "b", 60) == [True]
    assert slots.claim([("e", 1)], "c", ttl=1, retention=60)[0].status == DONE


def test_extending_keeps_a_claim_past_its_ttl_and_fails_once_taken_over(store) -> None:
    slots, _masters = store
    slots.claim([("e", 1)], "a", ttl=0.3, retention=60)
    for _ in range(3):
        time.sleep(0.15)
        assert slots.extend([("e", 1)], "a", ttl=0.3, retention=60) == [True]
    assert slots.claim([("e", 1)], "b", ttl=0.3, retention=60)[0].status == HELD
    time.sleep(0.4)
    assert slots.claim([("e", 1)], "b", ttl=5, retention=60)[0].status == CLAIMED
    assert slots.extend([("e", 1)], "a", ttl=0.3, retention=60) == [False]

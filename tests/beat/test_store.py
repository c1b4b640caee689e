"""The Redis slot store on real masters where the contract suite cannot show it: an
entry's progress when a master restarted empty (the rest of the store's behaviour is in
``tests/stores/test_contract.py``, run on every store)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from celery_singleton_beat.connections.masters import Masters
from celery_singleton_beat.core.schema import ClaimStatus
from celery_singleton_beat.stores.base import SlotOutcome
from celery_singleton_beat.stores.redis import RedisSlotStore
from celery_singleton_beat.testing import RedisServer


@pytest.fixture
def store(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> Iterator[tuple[RedisSlotStore, list[RedisServer]]]:
    masters = redis_cluster(3)
    nodes = Masters.from_urls([m.url for m in masters], 0.2)
    yield RedisSlotStore(nodes, "t:"), masters
    nodes.close()


def test_a_master_restarted_empty_does_not_vote_on_an_entry_it_does_not_know(
    store: tuple[RedisSlotStore, list[RedisServer]],
) -> None:
    slots, masters = store
    assert slots.init([("e", None)], now=1_000) == [(1_000, None)]
    claim = slots.claim([("e", 5_000)], "a", ttl=1, retention=60)[0]
    assert claim.status == ClaimStatus.CLAIMED
    assert slots.finish([SlotOutcome("e", 5_000, "dispatched", 1, 0)], "a", 60) == [True]
    masters[0].restart()
    assert slots.init([("e", None)], now=90_000) == [(5_000, None)]
    assert masters[0].client().hget("t:entry:e", "last") == b"5000", "it learns the value back"

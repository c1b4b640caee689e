"""Who owns which entry (rendezvous hashing over the live replicas), and how work against
the store is cut into batches: pure functions, tested in milliseconds."""

from __future__ import annotations

from collections import Counter

from celery_singleton_beat.core.batches import batches
from celery_singleton_beat.core.share import Share

REPLICAS = ["host-a:101", "host-b:202", "host-c:303"]
NAMES = [f"customer-{i}" for i in range(3000)]


def test_every_entry_has_exactly_one_owner_and_each_replica_owns_about_a_third() -> None:
    shares = [Share(me, REPLICAS) for me in REPLICAS]
    assert [sum(s.owns(n) for s in shares) for n in NAMES] == [1] * len(NAMES)
    owned = Counter(shares[0].owner(n) for n in NAMES)
    assert sorted(owned) == REPLICAS
    assert min(owned.values()) > 900


def test_when_a_replica_leaves_only_its_entries_move() -> None:
    before, after = Share(REPLICAS[0], REPLICAS), Share(REPLICAS[0], REPLICAS[:2])
    moved = [n for n in NAMES if before.owner(n) != after.owner(n)]
    assert moved == [n for n in NAMES if before.owner(n) == REPLICAS[2]]


def test_a_replica_outside_the_set_or_alone_owns_every_entry() -> None:
    assert all(Share("host-d:404", REPLICAS).owns(n) for n in NAMES[:100])
    assert all(Share("host-d:404", []).owns(n) for n in NAMES[:100])
    assert all(Share(REPLICAS[0], REPLICAS[:1]).owns(n) for n in NAMES[:100])


def test_batches_keep_the_order_and_stop_at_the_count_or_the_bytes() -> None:
    def cut(items: list[int], count: int, limit: int) -> list[list[int]]:
        return [list(b) for b in batches(items, lambda i: i, count=count, limit=limit)]

    assert cut([1] * 7, 3, 100) == [[1, 1, 1], [1, 1, 1], [1]]
    assert cut([4, 4, 4, 9, 1], 10, 8) == [[4, 4], [4], [9], [1]]
    assert cut([], 3, 100) == []

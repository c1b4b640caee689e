"""Work against the slot store cut into batches bounded by count and bytes.

A schedule of a hundred thousand entries sent as one pipeline is megabytes on each
socket: more than a master can take within the node timeout, so the whole write fails,
and fails again when retried whole. Cut into batches, each batch is one round trip (one
transaction on a database) with a deadline of its own, and a batch that fails is tried
again alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Items per batch (entries initialised, slots claimed or finished, in one round trip).
BATCH_COUNT = 500
#: Bytes of names per batch: long entry names make fewer per batch.
BATCH_BYTES = 64 * 1024
#: What a command costs besides its names (the script's SHA, its arguments, framing).
OVERHEAD = 96


def name_size(name: str) -> int:
    """The bytes one command about entry ``name`` puts on the wire, roughly."""
    return len(name) * 2 + OVERHEAD


def batches(
    items: Sequence[T],
    size: Callable[[T], int],
    *,
    count: int = BATCH_COUNT,
    limit: int = BATCH_BYTES,
) -> Iterator[Sequence[T]]:
    """``items`` in order, cut into runs of at most ``count`` items and at most ``limit``
    bytes by ``size`` (an item larger than ``limit`` goes alone)."""
    start, used = 0, 0
    for index, item in enumerate(items):
        cost = size(item)
        if index > start and (index - start >= count or used + cost > limit):
            yield items[start:index]
            start, used = index, 0
        used += cost
    if start < len(items):
        yield items[start:]

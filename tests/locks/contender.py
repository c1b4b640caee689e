"""A process that takes one lock many times and logs when it held it (for the exclusion test)."""

from __future__ import annotations

import time

from celery_singleton_beat.locks import Redlock


def hold_repeatedly(urls: list[str], attempts: int, hold: float) -> list[tuple[float, float]]:
    """Acquire ``attempts`` times; return the (start, end) of every hold on CLOCK_MONOTONIC."""
    lock = Redlock.from_urls(urls, node_timeout=0.5, retry_delay=0.005)
    intervals = []
    try:
        for _ in range(attempts):
            lease = lock.acquire("contended", ttl=10.0, wait=60.0)
            assert lease is not None
            start = time.monotonic()
            time.sleep(hold)
            end = time.monotonic()
            assert lock.release(lease)
            intervals.append((start, end))
    finally:
        lock.close()
    return intervals

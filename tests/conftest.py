from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from celery_singleton_beat.testing import RedisServer, redis_servers

pytest_plugins: list[str] = []


@pytest.fixture
def redis_cluster() -> Iterator[Callable[[int], list[RedisServer]]]:
    """Start K independent redis-server masters: ``servers = redis_cluster(3)``."""
    with ExitStack() as stack:
        yield lambda count: stack.enter_context(redis_servers(count))


@pytest.fixture
def three_masters(redis_cluster: Callable[[int], list[RedisServer]]) -> list[RedisServer]:
    return redis_cluster(3)

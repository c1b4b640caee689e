"""Redlock against real masters that fail: killed, paused, silent, restarted empty."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from celery_singleton_beat.errors import ConfigurationError, QuorumUnavailable
from celery_singleton_beat.locks import Redlock, Watchdog
from celery_singleton_beat.locks.base import Lease
from celery_singleton_beat.testing import RedisServer, SilentServer
from tests.locks.contender import hold_repeatedly

Cluster = Callable[[int], list[RedisServer]]


def redlock(servers: list[RedisServer], **options: object) -> Redlock:
    options.setdefault("node_timeout", 0.1)
    return Redlock.from_urls([s.url for s in servers], **options)  # type: ignore[arg-type]


def holders(servers: list[RedisServer], lock: Redlock, key: str) -> list[bool]:
    """Which masters hold any token for ``key``."""
    return [bool(s.client().exists(lock.lock_key(key))) for s in servers]


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.slow
def test_no_two_processes_ever_hold_the_lock_at_once(three_masters: list[RedisServer]) -> None:
    urls = [s.url for s in three_masters]
    processes, attempts = 8, 200
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        logs = pool.starmap(hold_repeatedly, [(urls, attempts, 0.0005)] * processes)
    intervals = sorted(itertools.chain.from_iterable(logs))
    assert len(intervals) == processes * attempts
    overlaps = [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]
    assert overlaps == []


def test_acquire_works_with_any_one_of_three_masters_down(three_masters: list[RedisServer]) -> None:
    lock = redlock(three_masters)
    for down in three_masters:
        down.kill()
        lease = lock.acquire(f"k-{down.port}", ttl=5)
        assert lease is not None
        assert lock.release(lease) is True
        down.start()


def test_two_of_three_masters_down_raises_quorum_unavailable_naming_them(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters)
    live, *down = three_masters
    for server in down:
        server.kill()
    started = time.monotonic()
    with pytest.raises(QuorumUnavailable) as failure:
        lock.acquire("k", ttl=5)
    assert time.monotonic() - started < 1.0
    assert sorted(failure.value.nodes) == sorted(s.name for s in down)
    assert failure.value.needed == 2
    assert "only 1 of 3 Redis masters answered, 2 are needed" in str(failure.value)
    assert holders([live], lock, "k") == [False]


def test_two_of_three_down_with_wait_raises_once_wait_has_passed(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters)
    three_masters[0].kill()
    three_masters[1].kill()
    started = time.monotonic()
    with pytest.raises(QuorumUnavailable):
        lock.acquire("k", ttl=5, wait=0.5)
    assert 0.5 <= time.monotonic() - started < 2.0


def test_five_masters_grant_exactly_when_a_majority_is_free(redis_cluster: Cluster) -> None:
    servers = redis_cluster(5)
    lock = redlock(servers)
    key = lock.lock_key("k")
    for size in range(6):
        for taken in itertools.combinations(servers, size):
            for server in taken:
                server.client().set(key, "foreign-token", px=60_000)
            lease = lock.acquire("k", ttl=5)
            assert (lease is not None) == (5 - size >= 3), f"{size} masters pre-locked"
            if lease is None:
                assert [s.client().get(key) for s in servers] == [
                    b"foreign-token" if s in taken else None for s in servers
                ], "a failed attempt must be released on every master"
            for server in servers:
                server.client().delete(key)


def test_a_silent_master_bounds_acquire_latency_by_the_node_timeout(
    redis_cluster: Cluster, silent: SilentServer
) -> None:
    servers = redis_cluster(2)
    lock = Redlock.from_urls([servers[0].url, silent.url, servers[1].url], node_timeout=0.2)
    for attempt in range(3):
        started = time.monotonic()
        lease = lock.acquire(f"k{attempt}", ttl=5)
        elapsed = time.monotonic() - started
        assert lease is not None
        assert elapsed < 0.2 + 0.15


def test_two_silent_masters_give_quorum_unavailable_within_two_node_timeouts(
    redis_cluster: Cluster, silent: SilentServer
) -> None:
    other = SilentServer()
    try:
        servers = redis_cluster(1)
        lock = Redlock.from_urls([servers[0].url, silent.url, other.url], node_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(QuorumUnavailable, match=r"no reply within 0\.2s"):
            lock.acquire("k", ttl=5)
        # one round trip for the attempt, one for releasing it on every master
        assert time.monotonic() - started < 2 * 0.2 + 0.15
        assert holders(servers, lock, "k") == [False]
    finally:
        other.close()


def test_release_and_extend_leave_another_owners_token_alone(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters)
    lease = lock.acquire("k", ttl=0.3)
    assert lease is not None
    time.sleep(0.35)
    for server in three_masters:
        server.client().set(lock.lock_key("k"), "foreign-token", px=60_000)
    assert lock.extend(lease, ttl=5) is False
    assert lock.release(lease) is False
    assert [s.client().get(lock.lock_key("k")) for s in three_masters] == [b"foreign-token"] * 3


def test_a_stale_token_cannot_extend_or_release_even_before_local_expiry(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters)
    lease = lock.acquire("k", ttl=5)
    assert lease is not None
    for server in three_masters:
        server.client().set(lock.lock_key("k"), "foreign-token", px=60_000)
    assert lock.extend(lease, ttl=5) is False
    assert lock.release(lease) is False
    assert [s.client().get(lock.lock_key("k")) for s in three_masters] == [b"foreign-token"] * 3


def test_extend_after_expiry_does_not_recreate_the_key(three_masters: list[RedisServer]) -> None:
    lock = redlock(three_masters)
    lease = lock.acquire("k", ttl=0.2)
    assert lease is not None
    time.sleep(0.3)
    lease.valid_until = time.monotonic() + 10  # pretend our clock did not notice the expiry
    assert lock.extend(lease, ttl=5) is False
    assert holders(three_masters, lock, "k") == [False, False, False]
    assert lock.release(lease) is False


class SteppingClock:
    """A monotonic clock that jumps ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_an_acquisition_slower_than_ttl_minus_drift_is_refused_and_released(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters, clock=SteppingClock(step=0.99))
    assert lock.acquire("k", ttl=1.0) is None
    assert holders(three_masters, lock, "k") == [False, False, False]


def test_an_acquisition_just_inside_ttl_minus_drift_is_granted(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters, clock=SteppingClock(step=0.98))
    lease = lock.acquire("k", ttl=1.0)
    assert lease is not None
    assert holders(three_masters, lock, "k") == [True, True, True]


def test_fencing_tokens_increase_after_a_master_restarts_empty(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters)
    a, b, c = three_masters
    fences = []

    def grant() -> None:
        lease = lock.acquire("k", ttl=5)
        assert lease is not None
        fences.append(lease.fence)
        lock.release(lease)

    for _ in range(5):
        grant()
    a.restart()  # a's counter is gone
    c.kill()  # the next majority must include a
    for _ in range(3):
        grant()
    c.start()  # c comes back empty too
    b.kill()  # now a and c decide alone
    for _ in range(3):
        grant()
    assert fences == list(range(1, 12))


def test_a_master_paused_during_acquire_costs_at_most_the_node_timeout(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters, node_timeout=0.2)
    three_masters[0].pause()
    try:
        started = time.monotonic()
        lease = lock.acquire("k", ttl=5)
        elapsed = time.monotonic() - started
        assert lease is not None
        assert elapsed < 0.2 + 0.15
        assert holders(three_masters[1:], lock, "k") == [True, True]
        assert lock.acquire("k", ttl=5) is None
    finally:
        three_masters[0].resume()
    assert lock.release(lease) is True


def test_client_pause_on_a_master_does_not_stop_the_majority(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters, node_timeout=0.1)
    three_masters[2].client_pause(500)
    lease = lock.acquire("k", ttl=5)
    assert lease is not None
    assert lock.release(lease) is True


def test_the_watchdog_keeps_a_lease_past_three_ttls(three_masters: list[RedisServer]) -> None:
    lock = redlock(three_masters)
    lease = lock.acquire("k", ttl=0.6)
    assert lease is not None
    lost: list[Lease] = []
    with Watchdog(lock, lease, on_lost=lost.append):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert lock.acquire("k", ttl=5) is None
            time.sleep(0.1)
        assert lease.remaining() > 0.2
    assert lost == []
    assert lock.release(lease) is True


def test_the_watchdog_reports_a_lost_lease_within_one_extension_period(
    three_masters: list[RedisServer],
) -> None:
    lock = redlock(three_masters)
    lease = lock.acquire("k", ttl=0.9)
    assert lease is not None
    told = threading.Event()
    calls: list[Lease] = []

    def on_lost(lost: Lease) -> None:
        calls.append(lost)
        told.set()

    with Watchdog(lock, lease, on_lost=on_lost):
        time.sleep(0.1)
        three_masters[0].kill()
        three_masters[1].kill()
        killed_at = time.monotonic()
        assert told.wait(2.0)
        assert time.monotonic() - killed_at < 0.3 + 0.1 + 0.1
    assert calls == [lease]
    assert lease.lost is True
    assert lease.remaining() == 0.0


def test_a_password_url_works_and_the_password_never_shows(redis_cluster: Cluster) -> None:
    server = RedisServer(password="s3cret").start()
    try:
        lock = Redlock.from_urls([f"redis://:s3cret@127.0.0.1:{server.port}/0"])
        lease = lock.acquire("k", ttl=5)
        assert lease is not None
        assert "s3cret" not in repr(lock)
        wrong = Redlock.from_urls([f"redis://:wrong@127.0.0.1:{server.port}/0"])
        with pytest.raises(QuorumUnavailable) as failure:
            wrong.acquire("k", ttl=5)
        assert "wrong" not in str(failure.value)
        assert f"127.0.0.1:{server.port}" in str(failure.value)
    finally:
        server.stop()


def test_rediss_urls_build_tls_connections() -> None:
    lock = Redlock.from_urls(["rediss://user:pw@10.0.0.1:6380/0"])
    connection = lock.masters.nodes[0].checkout()
    assert type(connection).__name__ == "SSLConnection"
    assert repr(lock) == "<Redlock [rediss://***@10.0.0.1:6380/0] quorum=1>"


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ([], r"urls = \[\] is not valid: give at least one master"),
        ("", r"urls = \[\] is not valid: give at least one master"),
        (["127.0.0.1:6379"], r"redis URL = '127.0.0.1:6379' is not valid: a redis:// or rediss://"),
        (["http://127.0.0.1:6379/0"], r"redis URL = 'http://127.0.0.1:6379/0' is not valid"),
        (
            ["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7002/0", "redis://127.0.0.1:7001/1"],
            r"each master must be a distinct host:port, and 127.0.0.1:7001 is given twice",
        ),
        (
            "redis://a:7001/0, redis://b:7001/0,redis://a:7001/2",
            r"a:7001 is given twice",
        ),
    ],
)
def test_bad_master_lists_are_refused_naming_the_argument(urls: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Redlock.from_urls(urls)  # type: ignore[arg-type]


def test_a_comma_separated_string_of_urls_is_accepted() -> None:
    lock = Redlock.from_urls("redis://a:7001/0, redis://b:7002/0,redis://c:7003/0")
    assert [n.name for n in lock.masters.nodes] == ["a:7001", "b:7002", "c:7003"]
    assert lock.quorum == 2


@pytest.mark.parametrize("timeout", [0, -0.1, "fast", True])
def test_a_bad_node_timeout_is_refused(timeout: object) -> None:
    with pytest.raises(ConfigurationError, match=r"node_timeout = .* a positive number of seconds"):
        Redlock.from_urls(["redis://a:7001/0"], node_timeout=timeout)  # type: ignore[arg-type]


def test_a_password_in_a_refused_url_is_hidden() -> None:
    with pytest.raises(ConfigurationError) as failure:
        Redlock.from_urls(["redis://:hunter2@a:7001/0", "redis://:hunter2@a:7001/1"])
    assert "hunter2" not in str(failure.value)

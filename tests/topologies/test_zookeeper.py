"""The ZooKeeper store and lock: settings in kazoo's terms refused at start-up with the
setting named, leases that go with a session, and three beat replicas on a three-member
ensemble losing one member, then two, then getting one back."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat.connections.zookeeper import ZooKeeper
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.locks.zookeeper import ZooKeeperLock, from_app
from celery_singleton_beat.settings.config import Config
from celery_singleton_beat.settings.zookeeper import zookeeper_settings
from celery_singleton_beat.stores import SlotOutcome
from celery_singleton_beat.stores.zookeeper import ZooKeeperSlotStore
from celery_singleton_beat.testing import RedisServer, free_port, http_status, wait_for
from celery_singleton_beat.testing.zookeeper import ZooKeeperEnsemble, ZooKeeperServer
from tests.support.clusters import (
    FAST,
    TaskCluster,
    beat_cluster,
    check_exactly_once,
    executed_slots,
)

HOSTS = "singleton_beat_zookeeper_hosts"
OPTIONS = "singleton_beat_zookeeper_options"


def config(**settings: Any) -> Config:
    return Config.from_conf({"singleton_beat_store": "zookeeper", **settings})


def test_the_zookeeper_store_takes_kazoo_s_hosts_chroot_and_options() -> None:
    found = config(
        singleton_beat_zookeeper_hosts=["zk1:2181", "zk2:2181", "zk3:2181"],
        singleton_beat_zookeeper_chroot="/apps/beat",
        singleton_beat_zookeeper_options={"timeout": 6, "auth_data": [("digest", "u:secret")]},
    )
    settings = found.zookeeper()
    assert settings.hosts == "zk1:2181,zk2:2181,zk3:2181/apps/beat"
    assert settings.options == {"timeout": 6, "auth_data": [("digest", "u:secret")]}
    assert found.zookeeper_root() == "/singleton-beat"
    assert "secret" not in repr(found.settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, r"singleton_beat_zookeeper_hosts = None is not valid: kazoo's hosts: 'host:port'"),
        (
            {"singleton_beat_zookeeper_hosts": "zk1:2181,zk2:99999"},
            r"singleton_beat_zookeeper_hosts = 'zk1:2181,zk2:99999' is not valid: .*"
            r"'zk2:99999' is not host:port",
        ),
        (
            {"singleton_beat_zookeeper_hosts": "zk1", "singleton_beat_zookeeper_chroot": "beat"},
            r"singleton_beat_zookeeper_chroot = 'beat' is not valid: a znode path such as",
        ),
        (
            {"singleton_beat_zookeeper_hosts": "zk1/a", "singleton_beat_zookeeper_chroot": "/b"},
            r"singleton_beat_zookeeper_chroot = '/b' is not valid: unset when .* ends in a chroot",
        ),
        (
            {HOSTS: "zk1", OPTIONS: {"tmeout": 5}},
            r"singleton_beat_zookeeper_options\['tmeout'\] = 5 is not valid: a dict of KazooClient",
        ),
        (
            {HOSTS: "zk1", OPTIONS: {"timeout": 0}},
            r"singleton_beat_zookeeper_options\['timeout'\] = 0 is not valid: a positive number",
        ),
        (
            {
                "singleton_beat_zookeeper_hosts": "zk1",
                "singleton_beat_zookeeper_options": {"connection_retry": {"tries": 3}},
            },
            r"singleton_beat_zookeeper_options\['connection_retry'\] = \['tries'\] is not valid: "
            r"KazooRetry arguments",
        ),
    ],
)
def test_a_bad_zookeeper_setting_is_refused_at_start_naming_it(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config(**settings)


def test_singleton_tasks_lock_on_the_ensemble_the_settings_name(
    _session_zookeeper: ZooKeeperServer,
) -> None:
    app = Celery("zk", broker="memory://")
    app.conf.update(
        singleton_beat_zookeeper_hosts=_session_zookeeper.name,
        singleton_beat_key_prefix=f"tasks-{uuid.uuid4().hex}:",
    )
    lock = from_app(app)
    try:
        lease = lock.acquire("task", ttl=5)
        assert lease is not None
        assert lock.holder("task") == lease.token
    finally:
        lock.close()


def test_the_task_lock_refuses_missing_hosts_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"singleton_beat_zookeeper_hosts = None is not"):
        from_app(Celery("zk", broker="memory://"))


def test_a_lease_goes_with_its_holder_s_session_before_its_ttl(
    zookeeper: Callable[[], ZooKeeper],
) -> None:
    holder, other = ZooKeeperLock(zookeeper()), ZooKeeperLock(zookeeper())
    lease = holder.acquire("k", ttl=60)
    assert lease is not None
    assert other.acquire("k", ttl=60) is None
    holder.zk.close()  # the session ends: the ensemble deletes its ephemeral znodes
    taken = other.acquire("k", ttl=60)
    assert taken is not None
    assert taken.fence > lease.fence


def test_claims_expire_on_the_ensemble_s_clock_not_the_replica_s(
    zookeeper: Callable[[], ZooKeeper], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ZooKeeperSlotStore(zookeeper())
    assert store.claim([("e", 1)], "a", ttl=1, retention=60)[0].status == "claimed"
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)  # a replica clock far ahead
    assert store.claim([("e", 1)], "b", ttl=1, retention=60)[0].status == "held"


def test_fences_past_their_retention_are_deleted_and_younger_ones_kept(
    zookeeper: Callable[[], ZooKeeper],
) -> None:
    store = ZooKeeperSlotStore(zookeeper())
    store.prune_every = 0
    store.init([("e", None)], now=0)
    store.claim([("e", 1), ("e", 2)], "a", ttl=1, retention=60)
    store.finish([SlotOutcome("e", 1, "dispatched", 1, 0)], "a", retention=0.3)
    time.sleep(0.5)
    store.finish([SlotOutcome("e", 2, "dispatched", 1, 0)], "a", retention=0.3)
    assert store.zk.children("fences", store.zk.path("fences", "e")) == ["2"]
    assert store.entry_counts("e") == {"last": 2, "dispatched": 2, "skipped": 0}


@pytest.mark.slow
def test_three_replicas_on_an_ensemble_survive_one_member_fail_closed_without_two_and_recover(
    ensemble: ZooKeeperEnsemble, three_masters: list[RedisServer], tmp_path: Path
) -> None:
    ports = [free_port(), free_port(), free_port()]
    schedule = {
        "one": {"every": 1},
        "skip": {"every": 1, "options": {"singleton_beat": {"misfire": "skip"}}},
    }
    settings = {
        **FAST,
        "singleton_beat_store": "zookeeper",
        "singleton_beat_zookeeper_hosts": ensemble.hosts,
        "singleton_beat_zookeeper_options": {"timeout": 4},
    }
    with beat_cluster(tmp_path, three_masters, schedule, **settings) as cluster:
        cluster.start_worker()
        replicas = [
            cluster.start_replica(f"r{i}", settings={"singleton_beat_health_port": port})
            for i, port in enumerate(ports)
        ]
        wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
        wait_for(lambda: http_status(ports[0], "/readyz") == 200, 10, "/readyz 200")
        follower, other, leader = ensemble.by_mode()
        start = time.time()
        follower.kill()
        time.sleep(6)
        end = time.time() - 1.5
        check_exactly_once(cluster.executions(), "one", 1, start, end)

        other.kill()  # one member of three: no quorum
        for port in ports:
            wait_for(lambda port=port: http_status(port, "/readyz") == 503, 15, "/readyz 503")
        assert http_status(ports[0], "/healthz") == 200, "the loop is alive, only not ready"
        time.sleep(1.5)
        before = len(cluster.executions())
        time.sleep(5)
        assert len(cluster.executions()) == before, "nothing is published without a quorum"

        follower.spawn()  # two of three again
        for port in ports:
            wait_for(lambda port=port: http_status(port, "/readyz") == 200, 30, "/readyz 200")
        resumed = time.time()
        time.sleep(5)
        rows = cluster.executions()
        logs = [r.text() for r in replicas]
        skipped = ZooKeeperSlotStore(
            ZooKeeper(zookeeper_settings(ensemble.hosts), "/singleton-beat", wait=5)
        )
        counts = {entry: skipped.entry_counts(entry) for entry in ("one", "skip")}
        skipped.close()
    assert leader.process is not None and leader.process.poll() is None
    executed = executed_slots(rows, "one")
    assert [s for s, n in executed.items() if n > 1] == [], "no slot executed twice"
    assert any(r["at"] > resumed for r in rows), "dispatch resumes by itself"
    first = min(executed)
    handled = (counts["one"]["last"] - first) // 1000 + 1
    assert counts["one"]["dispatched"] + counts["one"]["skipped"] == handled, (counts, first)
    assert counts["skip"]["skipped"] >= 5, "the slots missed without a quorum are counted"
    for log in logs:
        assert log.count("no quorum of the ZooKeeper ensemble reachable") == 1, log[-3000:]
        assert log.count("a quorum of the ZooKeeper ensemble answers again") == 1, log[-3000:]


@pytest.mark.slow
def test_replicas_crashed_killed_and_paused_past_the_claim_ttl_on_zookeeper_run_each_slot_once(
    _session_zookeeper: ZooKeeperServer, three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """A replica dies between publishing a slot and marking it done (another sends it
    again with the same task id; the worker drops the copy); the replica that sent last
    is killed twice; one is paused past the claim TTL."""
    settings = {
        **FAST,
        "singleton_beat_store": "zookeeper",
        "singleton_beat_zookeeper_hosts": _session_zookeeper.name,
        "singleton_beat_zookeeper_options": {"timeout": 4},
        "singleton_beat_key_prefix": f"replicas-{uuid.uuid4().hex}:",
    }
    schedule = {"one": {"every": 1}, "two": {"every": 2}}
    with beat_cluster(tmp_path, three_masters, schedule, **settings) as cluster:
        cluster.start_worker()
        crasher = cluster.start_replica(
            "crasher", scheduler="tests.beat.app:CrashAfterPublish", TEST_CRASH_ENTRY="two"
        )
        for name in ("r1", "r2", "r3"):
            cluster.start_replica(name)
        wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
        began = time.time()
        wait_for(lambda: not crasher.alive(), 60, f"the crash hook\n{crasher.text()}")
        assert crasher.popen.returncode == 17
        wait_for(cluster.skipped, 15, "the slot sent again to reach the worker")
        for _ in range(2):  # SIGKILL the replica that sent last, and start it again
            time.sleep(4.5)
            cluster.restart(cluster.replica_of(cluster.executions()[-1]["replica"]))
        paused = next(p for p in cluster.processes if p.name == "r1")
        paused.signal(19)  # SIGSTOP, past the claim TTL
        time.sleep(3 * FAST["singleton_beat_claim_ttl"])
        paused.signal(18)  # SIGCONT
        time.sleep(6)
        end = time.time() - 1.5
        rows, skipped = cluster.executions(), cluster.skipped()
        assert paused.alive()
    check_exactly_once(rows, "one", 1, began, end)
    check_exactly_once(rows, "two", 2, began, end)
    # the crashed replica's slot, and any a killed or paused replica had sent before its
    # claim was taken over, reached the worker twice under one task id: dropped, not run
    assert {s["reason"] for s in skipped} == {"skipped_duplicate"}
    assert "two" in {s["entry"] for s in skipped}


@pytest.mark.slow
def test_a_singleton_task_lock_on_zookeeper_is_free_soon_after_its_worker_is_killed(
    _session_zookeeper: ZooKeeperServer, cluster: TaskCluster
) -> None:
    prefix = f"tasks-{uuid.uuid4().hex}:"
    settings = {
        "singleton_beat_task_backend": "celery_singleton_beat.locks.zookeeper.from_app",
        "singleton_beat_zookeeper_hosts": _session_zookeeper.name,
        "singleton_beat_zookeeper_options": {"timeout": 2},
        "singleton_beat_key_prefix": prefix,
    }
    worker = cluster.start_worker(TEST_SETTINGS=json.dumps(settings))
    cluster.send("until_killed", 60)
    wait_for(lambda: cluster.events("RunStarted", "until_killed"), 20, "the run to start")
    key = str(cluster.events("RunStarted", "until_killed")[0]["key"])
    hosts = zookeeper_settings(_session_zookeeper.name)
    lock = ZooKeeperLock(ZooKeeper(hosts, "/" + prefix[:-1], wait=2))
    try:
        assert lock.holder(key) is not None, "the running task holds its lock on ZooKeeper"
        cluster.send("until_killed", 60)  # a second copy meanwhile: skipped, not run
        wait_for(lambda: cluster.events("RunSkipped", "until_killed"), 20, "the copy skipped")
        cluster.kill(worker)
        wait_for(lambda: lock.holder(key) is None, 10, "the lock to go")
    finally:
        lock.zk.close()
    cluster.start_worker("worker-2", TEST_SETTINGS=json.dumps(settings))
    cluster.send("until_killed", 0.1)
    wait_for(
        lambda: any(r.get("phase") == "finished" for r in cluster.runs("until_killed")),
        20, "the next run",
    )  # fmt: skip
    assert [r.get("phase") for r in cluster.runs("until_killed")] == [
        "started",
        "started",
        "finished",
    ]

"""The ZooKeeper store and lock: settings in kazoo's terms refused at start-up with the
setting named, leases that go with a session, and three beat replicas on a three-member
ensemble through a crash, a SIGKILL, a pause past their session, the leader member lost,
then a second member, then one member back."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat.connections.zookeeper import ZooKeeper, name_of
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.locks.zookeeper import ZooKeeperLock, from_app
from celery_singleton_beat.settings.config import Config
from celery_singleton_beat.settings.zookeeper import zookeeper_settings
from celery_singleton_beat.stores import SlotOutcome
from celery_singleton_beat.stores.zookeeper import ZooKeeperSlotStore
from celery_singleton_beat.testing import (
    Process,
    RedisServer,
    free_port,
    http_status,
    wait_for,
)
from celery_singleton_beat.testing.zookeeper import ZooKeeperEnsemble, ZooKeeperServer
from tests.support.clusters import (
    FAST,
    BeatCluster,
    TaskCluster,
    beat_cluster,
    check_exactly_once,
    executed_slots,
    slot_ms,
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


def test_a_large_batch_sent_as_its_member_dies_ends_unavailable_within_the_wait() -> None:
    """kazoo wakes its connection thread with a byte per request on a socket pair that
    thread does not read while it waits to reconnect: a batch of thousands sent then must
    still end, StoreUnavailable within the wait, not block its sender for good."""
    from celery_singleton_beat.errors import StoreUnavailable
    from celery_singleton_beat.testing.zookeeper import zookeeper_server

    with zookeeper_server() as member:
        zk = ZooKeeper(zookeeper_settings(member.name), "/dying", wait=2.0)
        paths = [zk.path("entries", f"e{i}") for i in range(5000)]
        assert zk.read("read before", paths[:10]) == [None] * 10
        member.kill()
        wait_for(lambda: not zk.client.connected, 10, "the session seeing its member gone")
        ended: list[BaseException] = []

        def read_all() -> None:
            try:
                zk.read("read many", paths)
            except BaseException as exc:  # what ended it is the assertion
                ended.append(exc)

        reader = threading.Thread(target=read_all, daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(15)
        assert not reader.is_alive(), "the batch blocked its sender past its wait"
        assert [type(e) for e in ended] == [StoreUnavailable]
        assert time.monotonic() - started < 2.0 + 1.0
        member.start()
        wait_for(lambda: zk.client.connected, 20, "the session back")
        assert zk.read("read after", paths) == [None] * len(paths)
        zk.close()


SESSION_TIMEOUT = 4.0
"""The replicas' ZooKeeper session timeout (s) in the ensemble test: the pause outlasts it."""


def heartbeats(hosts: str) -> Callable[[], set[str]]:
    """The replicas whose ephemeral heartbeat znode exists now (it goes with the session)."""

    def names() -> set[str]:
        store = ZooKeeperSlotStore(ZooKeeper(zookeeper_settings(hosts), "/singleton-beat", wait=5))
        try:
            return {name_of(n) for n in store.zk.children("list", store.zk.path("replicas"))}
        finally:
            store.close()

    return names


def stopped(process: Process) -> bool:
    """Whether the process is stopped (SIGSTOP): state ``T`` in ``/proc/{pid}/stat``."""
    return Path(f"/proc/{process.popen.pid}/stat").read_text().rsplit(") ", 1)[1][0] == "T"


def kill_the_last_sender(cluster: BeatCluster, replicas: list[Process]) -> float:
    """SIGKILL the replica that sent last and start it again; seconds until the next slot
    ran (sent by another replica)."""
    last = cluster.replica_of(cluster.executions()[-1]["replica"])
    replicas[replicas.index(last)] = cluster.restart(last)
    killed = time.time()
    wait_for(lambda: cluster.executions()[-1]["at"] > killed, 10, "a slot after the kill")
    return min(r["at"] for r in cluster.executions() if r["at"] > killed) - killed


def pause_past_the_session(
    cluster: BeatCluster, replicas: list[Process], live: Callable[[], set[str]]
) -> dict[str, Any]:
    """Stop the next replica to publish right before it publishes a slot it claimed, keep
    it stopped until its session expired (its heartbeat znode gone), then SIGCONT it; the
    slot, when it stopped and how long."""
    assert cluster.broker is not None
    broker = cluster.broker.client()
    broker.set("pause", 1)  # read by tests.beat.app:PauseBeforePublish
    wait_for(lambda: any(p.alive() and stopped(p) for p in replicas), 15, "a replica stopped")
    [process] = [p for p in replicas if p.alive() and stopped(p)]
    paused: dict[str, Any] = json.loads(broker.get("paused") or "{}")
    replica = cluster.replica_id(process)
    wait_for(lambda: replica not in live(), 3 * SESSION_TIMEOUT, "the session to expire")
    paused.update(held=time.time() - paused["at"], replica=replica)
    assert paused["held"] > SESSION_TIMEOUT
    process.signal(signal.SIGCONT)
    wait_for(lambda: replica in live(), 15, "the resumed replica's heartbeat")
    return paused


def lose_two_members_and_get_one_back(
    cluster: BeatCluster, members: list[ZooKeeperServer], ports: list[int]
) -> float:
    """Kill ``members[1]`` too (``members[0]`` is down already): nothing is published and
    every /readyz answers 503; start ``members[0]`` again: every /readyz answers 200. When
    the replicas were all ready again."""
    members[1].kill()
    for port in ports:
        wait_for(lambda port=port: http_status(port, "/readyz") == 503, 15, "/readyz 503")
    assert http_status(ports[0], "/healthz") == 200, "the loop is alive, only not ready"
    time.sleep(1.5)
    before = len(cluster.executions())
    time.sleep(4)
    assert len(cluster.executions()) == before, "nothing is published without a quorum"
    members[0].spawn()
    for port in ports:
        wait_for(lambda port=port: http_status(port, "/readyz") == 200, 30, "/readyz 200")
    return time.time()


def read_back(
    hosts: str, entries: list[str], paused: dict[str, Any]
) -> tuple[dict[str, dict[str, int]], tuple[bytes, Any]]:
    """Each entry's counts, and the paused slot's fence (its data and stat)."""
    store = ZooKeeperSlotStore(ZooKeeper(zookeeper_settings(hosts), "/singleton-beat", wait=5))
    try:
        fence = store.zk.path("fences", paused["entry"], str(paused["slot"]))
        [found] = store.zk.read("read the paused slot's fence", [fence])
        assert found is not None
        return {entry: store.entry_counts(entry) for entry in entries}, found
    finally:
        store.close()


@pytest.mark.slow
def test_replicas_crashed_killed_paused_past_their_session_and_members_lost_run_each_slot_once(
    ensemble: ZooKeeperEnsemble, three_masters: list[RedisServer], tmp_path: Path
) -> None:
    """On a three-member ensemble: a replica dies between publishing a slot and marking
    it done; the replica that sent last is SIGKILLed; one is stopped right before
    publishing a slot it claimed until its session expired (its heartbeat znode goes;
    resumed, its copy of the slot is dropped by the worker); the leader member is killed
    (no effect); a second member is killed (nothing published, /readyz 503, one log line)
    and one comes back (dispatch resumes by itself). No slot runs twice; every slot runs
    or is counted missed."""
    ports = [free_port(), free_port(), free_port()]
    schedule = {"one": {"every": 1}, "two": {"every": 2}}
    settings = {
        **FAST,
        # the default: a request waits half of it, long enough to ride out an election
        "singleton_beat_claim_ttl": 3.0,
        "singleton_beat_store": "zookeeper",
        "singleton_beat_zookeeper_hosts": ensemble.hosts,
        "singleton_beat_zookeeper_options": {"timeout": SESSION_TIMEOUT},
    }
    with beat_cluster(tmp_path, three_masters, schedule, **settings) as cluster:
        cluster.start_worker()
        crasher = cluster.start_replica(
            "crasher", scheduler="tests.beat.app:CrashAfterPublish", TEST_CRASH_ENTRY="two"
        )
        replicas = [
            cluster.start_replica(
                f"r{i}", scheduler="tests.beat.app:PauseBeforePublish",
                settings={"singleton_beat_health_port": port},
            )
            for i, port in enumerate(ports)
        ]  # fmt: skip
        wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
        began = time.time()
        wait_for(lambda: not crasher.alive(), 60, f"the crash hook\n{crasher.text()}")
        assert crasher.popen.returncode == 17
        wait_for(cluster.skipped, 15, "the slot sent again to reach the worker")
        after_kill = kill_the_last_sender(cluster, replicas)
        time.sleep(2)
        paused = pause_past_the_session(cluster, replicas, heartbeats(ensemble.hosts))
        time.sleep(2)
        follower, other, leader = ensemble.by_mode()
        assert leader.mode() == "leader"
        leader.kill()  # one member of three, the one that led: an election, no effect
        time.sleep(6)
        end = time.time() - 1.5
        resumed = lose_two_members_and_get_one_back(cluster, [leader, other], ports)
        time.sleep(4)
        rows, skipped = cluster.executions(), cluster.skipped()
        logs = [r.text() for r in replicas]
        assert all(r.alive() for r in replicas)
    counts, (data, stat) = read_back(ensemble.hosts, list(schedule), paused)
    check_exactly_once(rows, "one", 1, began, end)
    check_exactly_once(rows, "two", 2, began, end)
    assert [t for t, n in Counter(r["task_id"] for r in rows).items() if n > 1] == []
    for entry, spec in schedule.items():
        executed = executed_slots(rows, entry)
        assert [s for s, n in executed.items() if n > 1] == [], f"{entry}: a slot ran twice"
        handled = (counts[entry]["last"] - min(executed)) // (spec["every"] * 1000) + 1
        sent_or_missed = counts[entry]["dispatched"] + counts[entry]["skipped"]
        assert sent_or_missed == handled, (entry, counts[entry], min(executed))
    assert counts["one"]["skipped"] >= 3, "the slots missed without a quorum are counted"
    assert any(r["at"] > resumed for r in rows), "dispatch resumes by itself"
    [taken] = [
        r for r in rows if (r["entry"], slot_ms(r["slot"])) == (paused["entry"], paused["slot"])
    ]
    assert taken["replica"] != paused["replica"], "the paused replica's slot is taken over"
    assert json.loads(data)["outcome"] == "dispatched", "and marked sent by another"
    # the crashed replica's slot, and the paused one's once it resumed, reached the worker
    # twice under one task id: dropped, not run
    assert {s["reason"] for s in skipped} == {"skipped_duplicate"}
    assert {s["entry"] for s in skipped} >= {"two", paused["entry"]}
    for log in logs:
        assert log.count("no quorum of the ZooKeeper ensemble reachable") == 1, log[-3000:]
        assert log.count("a quorum of the ZooKeeper ensemble answers again") == 1, log[-3000:]
    print(
        f"\ntakeover: the next slot ran {after_kill:.2f} s after the SIGKILL of the replica "
        f"that sent last; the slot the paused replica held was marked sent by another "
        f"{stat.mtime / 1000 - paused['at']:.2f} s after it stopped (stopped "
        f"{paused['held']:.1f} s; the copy that ran was sent by {taken['replica']})"
    )
    assert follower.process is not None and follower.process.poll() is None


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

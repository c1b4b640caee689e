"""The etcd store and lock beyond the contract suites: their settings, refused at start-up
with the setting, the value and the accepted form; the store the settings name; and a
cluster without a majority answering nothing, rather than something old."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat.connections.etcd import Etcd
from celery_singleton_beat.errors import ConfigurationError, StoreUnavailable
from celery_singleton_beat.locks.etcd import EtcdLock, from_app
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.settings.config import Config
from celery_singleton_beat.stores import SlotOutcome
from celery_singleton_beat.stores.etcd import EtcdSlotStore
from celery_singleton_beat.testing.etcd import EtcdCluster

ENDPOINTS = ["http://127.0.0.1:2379"]


def etcd_conf(**settings: Any) -> dict[str, Any]:
    return {"singleton_beat_store": "etcd", "singleton_beat_etcd_endpoints": ENDPOINTS, **settings}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"singleton_beat_etcd_endpoints": None},
            r"singleton_beat_etcd_endpoints = None is not valid: a list of etcd client URLs",
        ),
        (
            {"singleton_beat_etcd_endpoints": ["127.0.0.1:2379"]},
            r"singleton_beat_etcd_endpoints = '127.0.0.1:2379' is not valid: a list of etcd",
        ),
        (
            {"singleton_beat_etcd_endpoints": "http://etcd-1"},
            r"singleton_beat_etcd_endpoints = 'http://etcd-1' is not valid: .*each with a host "
            r"and a port",
        ),
        (
            {"singleton_beat_etcd_endpoints": "http://a:2379,http://a:2379"},
            r"singleton_beat_etcd_endpoints = .* is not valid: .*, each once",
        ),
        (
            {"singleton_beat_etcd_timeout": 1.0},
            r"singleton_beat_etcd_timeout = 1.0 is not valid: a number of seconds at most a "
            r"quarter of singleton_beat_claim_ttl \(3.0\)",
        ),
        (
            {"singleton_beat_etcd_timeout": "fast"},
            r"singleton_beat_etcd_timeout = 'fast' is not valid: a positive number",
        ),
        (
            {"singleton_beat_etcd_username": "beat"},
            r"singleton_beat_etcd_username = 'beat' is not valid: set together with "
            r"singleton_beat_etcd_password",
        ),
        (
            {"singleton_beat_etcd_ca_file": "/no/such/ca.pem"},
            r"singleton_beat_etcd_ca_file = '/no/such/ca.pem' is not valid: the path of a PEM "
            r"file that exists on this host",
        ),
        (
            {"singleton_beat_etcd_cert_file": __file__},
            r"singleton_beat_etcd_cert_file = .* is not valid: set together with "
            r"singleton_beat_etcd_key_file",
        ),
    ],
)
def test_a_bad_etcd_setting_is_refused_at_start_naming_it(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Config.from_conf(etcd_conf(**settings))


def test_the_etcd_password_is_never_shown() -> None:
    config = Config.from_conf(
        etcd_conf(singleton_beat_etcd_username="beat", singleton_beat_etcd_password="s3cret")
    )
    assert config.settings["singleton_beat_etcd_password"] == "***"
    assert "s3cret" not in repr(config.settings)


def test_singleton_beat_store_etcd_makes_the_etcd_store_on_the_members_named(
    shared_etcd: EtcdCluster,
) -> None:
    app = Celery("etcd-store")
    app.conf.update(
        singleton_beat_store="etcd",
        singleton_beat_etcd_endpoints=",".join(shared_etcd.endpoints),
        singleton_beat_task_backend="celery_singleton_beat.locks.etcd.from_app",
    )
    store = Runtime.of(app).store
    assert isinstance(store, EtcdSlotStore)
    assert store.describe() == f"slot store -> etcd ({shared_etcd.endpoints[0][7:]})"
    assert store.check() == [("OK", f"{store.name} answers")]
    lock = from_app(app)
    try:
        assert lock.acquire("k", ttl=5) is not None
        assert store.leader_lock("other").acquire("k", ttl=5) is None, "one cluster, one key"
    finally:
        lock.close()


def test_without_a_majority_the_store_and_lock_answer_nothing_and_answer_again_after(
    etcd_three: EtcdCluster, tmp_path: Path
) -> None:
    client = Etcd(etcd_three.endpoints, timeout=0.5)
    store, lock = EtcdSlotStore(client), EtcdLock(client, owns_client=False)
    store.init([("e", None)], now=1_000)
    first, second, third = etcd_three.members
    first.kill()
    second.kill()
    claims = store.claim([("e", 2_000)], "a", ttl=5, retention=60)
    assert [(c.status, sorted(c.errors)) for c in claims] == [
        (None, sorted(m.url[7:] for m in etcd_three.members))
    ]
    with pytest.raises(StoreUnavailable, match=r"etcd could not .*127.0.0.1"):
        store.schedule_revision()
    with pytest.raises(StoreUnavailable):
        lock.acquire("k", ttl=5)
    etcd_three.restart(second)
    etcd_three.wait_answering([second, third])
    assert store.claim([("e", 2_000)], "a", ttl=5, retention=60)[0].status == "claimed"
    assert lock.acquire("k", ttl=5) is not None
    store.close()


def test_a_lock_extended_by_its_own_ttl_is_kept_alive_until_its_key_is_deleted_by_hand(
    shared_etcd: EtcdCluster,
) -> None:
    lock = EtcdLock(Etcd(shared_etcd.endpoints))
    lease = lock.acquire("k", ttl=2)
    assert lease is not None
    for _ in range(2):
        time.sleep(1.2)
        assert lock.extend(lease) is True, "the lease kept alive"
    assert lock.holder("k") == lease.token, "held 2.4 s after a grant of 2 s"
    shared_etcd.flush()  # an operator deletes the key: its lease lives on, the lock does not
    assert lock.extend(lease) is False
    assert lock.acquire("k", ttl=2) is not None
    lock.close()


def test_batches_beyond_etcds_operations_per_transaction_are_written_in_several(
    shared_etcd: EtcdCluster,
) -> None:
    """etcd refuses a transaction of more than 128 operations (its default)."""
    store = EtcdSlotStore(Etcd(shared_etcd.endpoints))
    names = [f"e{n}" for n in range(300)]
    store.init([(name, 1_000) for name in names], now=5_500)
    store.raise_run_states([(name, "queued", 2_000) for name in names], retention=60)
    store.start_at(names, 9_000)
    fences = [(name, 9_000) for name in names]
    assert {c.status for c in store.claim(fences, "a", ttl=5, retention=60)} == {"claimed"}
    done = [SlotOutcome(name, 9_000, "dispatched", 1, 0) for name in names]
    assert store.finish(done, "a", retention=60) == [True] * 300
    assert store.run_states(names)["e299"]["queued"] == 2_000
    assert store.entry_counts("e299") == {"last": 9_000, "dispatched": 1, "skipped": 0}
    store.close()

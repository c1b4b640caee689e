"""Prometheus metrics: served by beat on its health port, fed by the library's events."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry

from celery_singleton_beat import SingletonTask, events
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.observe.metrics import Metrics
from celery_singleton_beat.testing import RedisServer, free_port, wait_for
from tests.support.clusters import beat_cluster
from tests.support.scraped import PREFIX, Sample

NAMES = [
    "lock_acquire_seconds", "lock_contention_total", "slots_dispatched_total",
    "slots_skipped_total", "duplicates_prevented_total", "lock_lost_total", "leader",
    "replicas", "quorum_reachable",
]  # fmt: skip


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    pattern = rf"^celery_singleton_beat_{name}{re.escape(labels)} (\S+)$"
    match = re.search(pattern, text, flags=re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_beat_serves_metrics_that_move_as_slots_are_dispatched(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    port = free_port()
    with beat_cluster(tmp_path, three_masters, {"every-second": {"every": 1}}) as cluster:
        cluster.start_worker()
        cluster.start_replica("r1", settings={"singleton_beat_health_port": port})

        def metrics() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return r.read().decode()

        wait_for(lambda: len(cluster.executions()) >= 2, 30, "dispatching")
        first = metrics()
        wait_for(lambda: len(cluster.executions()) >= 5, 30, "more dispatching")
        second = metrics()
    for name in NAMES:
        assert f"# TYPE celery_singleton_beat_{name}" in first, name
    dispatched = '_total{entry="every-second"}'
    assert (
        sample(second, "slots_dispatched", dispatched)
        > sample(first, "slots_dispatched", dispatched)
        >= 1
    )
    assert sample(second, "replicas") == 1
    assert sample(second, "quorum_reachable") == 1
    assert sample(second, "leader") == 0


def test_task_metrics_count_contention_duplicates_and_acquire_time(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> None:
    master = redis_cluster(1)[0]
    metrics = Metrics(CollectorRegistry())
    unsubscribe = events.subscribe(metrics.record)
    app = Celery("metrics", broker="memory://")
    app.conf.singleton_beat_redis_urls = [master.url]

    @app.task(base=SingletonTask, singleton_key="report", shared=False)
    def report() -> str:
        return "done"

    try:
        holder = Redlock.from_urls([master.url]).acquire("task:report", ttl=30)
        assert holder is not None
        assert report.apply().get() is None, "skipped while another run holds the key"
        Redlock.from_urls([master.url]).release(holder)
        assert report.apply().get() == "done"
    finally:
        unsubscribe()
    text = metrics.render()[0].decode()
    task = f'{{task="{report.name}"}}'
    assert sample(text, "duplicates_prevented_total", task) == 1
    assert sample(text, "lock_contention_total", task) == 1
    held = '_count{backend="Redlock",outcome="held"}'
    acquired = '_count{backend="Redlock",outcome="acquired"}'
    assert sample(text, "lock_acquire_seconds", held) == 1
    assert sample(text, "lock_acquire_seconds", acquired) == 1


def test_pauses_by_policy_are_counted_and_the_paused_entries_gauged_by_who_paused_them() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.record(events.EntryPaused(entry="report", by="pause_on_failure", reason="3 failed"))
    seen = {"host": "h", "pid": 1, "mode": "ha", "role": "standby", "ready": True}
    metrics.record(
        events.ReplicaSeen(**seen, paused={"pause_on_failure": 1, "hand": 2, "settings": 3})
    )
    metrics.record(
        events.ReplicaSeen(**seen, paused={"pause_on_failure": 0, "hand": 2, "settings": 3})
    )
    text = metrics.render()[0].decode()
    assert sample(text, "entry_pauses_total", '{by="pause_on_failure",entry="report"}') == 1
    assert re.findall(r"^celery_singleton_beat_entries_paused\S* \S+$", text, re.MULTILINE) == [
        'celery_singleton_beat_entries_paused{by="pause_on_failure"} 0.0',
        'celery_singleton_beat_entries_paused{by="hand"} 2.0',
        'celery_singleton_beat_entries_paused{by="settings"} 3.0',
    ]


def test_a_replica_gauges_the_entries_it_holds_paused_by_who_paused_them(
    scraped: list[Sample],
) -> None:
    """One entry paused in its settings, one by hand, one by its ``pause_on_failure``
    policy (:mod:`tests.support.scraped`)."""
    gauged = {s.labels["by"]: s.value for s in scraped if s.name == f"{PREFIX}entries_paused"}
    assert gauged == {"pause_on_failure": 1.0, "hand": 1.0, "settings": 1.0}

"""Schedule policies with real beat replicas and a worker: jitter spreads a herd of entries
the same way on every replica, the task reads its slot's time, and an entry whose runs
keep failing pauses itself until it is resumed."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import redis
from celery import Celery

from celery_singleton_beat import schedule
from celery_singleton_beat.core.slots import jitter_offset
from celery_singleton_beat.testing import RedisServer, free_port, wait_for
from tests.support.clusters import (
    ROOT,
    BeatCluster,
    beat_cluster,
    check_pauses_on_failure,
    slot_ms,
)

pytestmark = pytest.mark.slow

HERD = {
    f"herd-{n:02d}": {"every": 10, "options": {"singleton_beat": {"jitter": 5}}} for n in range(50)
}


def test_fifty_entries_due_on_the_same_second_are_sent_over_five_seconds_once_each(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    with beat_cluster(tmp_path, three_masters, HERD) as cluster:
        cluster.start_worker("w1", concurrency=4)
        for name in ("r1", "r2", "r3"):
            cluster.start_replica(name)
        wait_for(lambda: len(cluster.executions()) >= 100, 60, "two slots of each entry")
        time.sleep(2)
        rows, dropped = cluster.executions(), cluster.skipped()

    counts = Counter((r["entry"], r["slot"]) for r in rows)
    assert [k for k, n in counts.items() if n > 1] == []
    assert dropped == []  # no second copy was sent either
    # the records keep the scheduled time: every header names a whole ten seconds
    slots = {slot_ms(r["slot"]) for r in rows}
    assert all(s % 10_000 == 0 for s in slots), sorted(slots)
    # each run started after its slot's own offset, the one every replica computes (and
    # soon after it: slack for a worker on a busy machine)
    late = [r["at"] * 1000 - slot_ms(r["slot"]) for r in rows]
    offsets = [jitter_offset(r["entry"], slot_ms(r["slot"]), 5000) for r in rows]
    wrong = [
        (r["entry"], r["slot"], offset, round(ms))
        for r, offset, ms in zip(rows, offsets, late, strict=True)
        if not offset <= ms < offset + 5000
    ]
    assert wrong == []
    for slot in slots:  # and one slot's sends spread over the five seconds
        spread = [ms for ms, r in zip(late, rows, strict=True) if slot_ms(r["slot"]) == slot]
        if len(spread) == 50:
            assert max(spread) - min(spread) > 4000


STAMPED = {
    "stamped": {
        "every": 2,
        "task": "record_slot",
        "options": {"singleton_beat": {"slot_kwarg": "scheduled_at"}},
    }
}


def test_the_task_reads_its_slot_time_from_its_keyword_argument_and_header(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    with beat_cluster(tmp_path, three_masters, STAMPED) as cluster:
        cluster.start_worker("w1")
        cluster.start_replica("r1")
        wait_for(lambda: len(cluster.executions()) >= 2, 40, "two runs")
        rows = cluster.executions()

    assert all(r["kwarg"] == r["slot"] for r in rows), rows
    assert all(slot_ms(r["kwarg"]) % 2000 == 0 for r in rows), rows


FLAKY = {
    "flaky": {"every": 1, "task": "fail", "options": {"singleton_beat": {"pause_on_failure": 3}}}
}


def client_app(cluster: BeatCluster, masters: list[RedisServer]) -> Celery:
    app = Celery("operator", broker=cluster.broker.url if cluster.broker else "memory://")
    app.conf.update(singleton_beat_redis_urls=[m.url for m in masters])
    return app


def test_an_entry_failing_three_times_pauses_with_its_reason_until_resumed(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    with beat_cluster(tmp_path, three_masters, FLAKY) as cluster:
        assert cluster.broker is not None
        broker = redis.Redis.from_url(cluster.broker.url)
        broker.set("failing", 1)
        cluster.start_worker("w1")
        port = free_port()
        cluster.start_replica("r1", settings={"singleton_beat_health_port": port})
        app = client_app(cluster, three_masters)
        pause = check_pauses_on_failure(cluster, app, "flaky")
        ran = len(cluster.executions())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            metrics = page.read().decode()
        status = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "tests.beat.app", "singleton-beat", "status"],
            env=cluster.env(), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        ).stdout  # fmt: skip
        broker.delete("failing")
        schedule.resume(app, "flaky")
        wait_for(lambda: len(cluster.executions()) >= ran + 3, 20, "runs after resume")
        paused_again = "flaky" in schedule.paused(app)

    assert f"paused by pause_on_failure ({pause['reason']})" in status
    assert not paused_again
    assert 'celery_singleton_beat_entries_paused{by="pause_on_failure"} 1.0' in metrics

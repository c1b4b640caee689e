"""Real Celery processes of the test apps, against Redis masters and a broker the test started.

- :class:`BeatCluster` (:func:`beat_cluster`): ``celery beat -S singleton`` replicas and a
  ``celery worker`` of ``tests.beat.app``; the test kills, pauses and restarts replicas
  and reads back what the worker executed;
- :class:`TaskCluster` (the ``cluster`` fixture of ``tests/conftest.py``): workers of
  ``tests.tasks.app`` and a client that sends them tasks, with the runs and events they
  recorded.

Every process is stopped at the end, whatever happens.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from celery import Celery

from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.testing import CeleryCluster, RedisServer

ROOT = Path(__file__).resolve().parents[2]
#: The task app's module and queue.
TASK_APP = "tests.tasks.app"
TASK_QUEUE = "task-tests"
#: Short claim and lease TTLs, for replica tests that wait for one to expire.
FAST = {"singleton_beat_claim_ttl": 1.0, "singleton_beat_lease_ttl": 3.0}


@dataclass
class AppCluster(CeleryCluster):
    """Processes of one test app on the test's masters and a broker of their own: the app
    reads both from the environment, and writes what ran to lists on the broker."""

    masters: list[RedisServer] = field(default_factory=list)
    broker: RedisServer | None = None

    def __post_init__(self) -> None:
        assert self.broker is not None
        self.base_env = {
            "PYTHONPATH": str(ROOT),
            "TEST_BROKER_URL": self.broker.url,
            "TEST_MASTERS": ",".join(m.url for m in self.masters),
        }

    def _rows(self, key: str) -> list[dict[str, Any]]:
        assert self.broker is not None
        client = redis.Redis.from_url(self.broker.url)
        return [json.loads(row) for row in client.lrange(key, 0, -1)]


@dataclass
class BeatCluster(AppCluster):
    """Replicas and a worker of ``tests.beat.app`` on the test's masters and broker."""

    schedule: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    database: dict[str, Any] | None = None
    """A Django ``DATABASES`` entry: the replicas use the database slot store on it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.base_env["TEST_SCHEDULE"] = json.dumps(self.schedule)
        self.base_env["TEST_SETTINGS"] = json.dumps(self.settings)
        if self.database is not None:
            self.base_env["TEST_DATABASE"] = json.dumps(self.database)

    def settings_env(self, settings: dict[str, Any]) -> dict[str, str]:
        return {"TEST_SETTINGS": json.dumps({**self.settings, **settings})}

    def executions(self) -> list[dict[str, Any]]:
        return self._rows("executions")

    def edit_source(self, schedule: dict[str, Any]) -> float:
        """Write a new schedule for ``tests.beat.app.RedisSource`` (``TEST_SCHEDULE``'s form)
        and bump its version; returns when (epoch seconds)."""
        assert self.broker is not None
        client = redis.Redis.from_url(self.broker.url)
        client.set("schedule", json.dumps(schedule))
        client.incr("schedule-version")
        return time.time()

    def replicas_seen(self) -> list[dict[str, Any]]:
        """ReplicaSeen events of replicas started with ``TEST_RECORD_REPLICAS=1``."""
        return self._rows("replica_seen")


@dataclass
class TaskCluster(AppCluster):
    """Workers of ``tests.tasks.app``, and a client that sends them tasks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.broker is not None
        self.client = Celery("sender", broker=self.broker.url)

    def send(self, task: str, *args: Any, **options: Any) -> str:
        result = self.client.send_task(f"{TASK_APP}.{task}", args, queue=TASK_QUEUE, **options)
        return str(result.id)

    def runs(self, task: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self._rows("runs") if task is None or r["task"] == f"{TASK_APP}.{task}"]

    def events(self, kind: str, task: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self._rows("events")
            if e["type"] == kind and (task is None or e.get("task") == f"{TASK_APP}.{task}")
        ]

    def lock(self) -> Redlock:
        return Redlock.from_urls([m.url for m in self.masters], node_timeout=0.1)


C = TypeVar("C", bound=AppCluster)


@contextmanager
def with_broker(make: Callable[[RedisServer], C]) -> Iterator[C]:
    """The cluster ``make`` builds on a broker started for it; both stopped at the end."""
    broker = RedisServer().start()
    try:
        cluster = make(broker)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        broker.stop()


@contextmanager
def beat_cluster(
    workdir: Path,
    masters: list[RedisServer] | dict[str, Any],
    schedule: dict[str, Any],
    **settings: Any,
) -> Iterator[BeatCluster]:
    """Replicas on Redis masters, or on a database when given a Django ``DATABASES`` entry."""
    database = masters if isinstance(masters, dict) else None

    def make(broker: RedisServer) -> BeatCluster:
        return BeatCluster(
            workdir, "tests.beat.app", queue="beat-tests", masters=[] if database else masters,
            broker=broker, schedule=schedule, settings=settings, database=database,
        )  # fmt: skip

    with with_broker(make) as cluster:
        yield cluster


@contextmanager
def task_cluster(workdir: Path, masters: list[RedisServer]) -> Iterator[TaskCluster]:
    """Workers of ``tests.tasks.app`` (none started yet) on ``masters``."""
    with with_broker(
        lambda broker: TaskCluster(
            workdir, TASK_APP, queue=TASK_QUEUE, masters=masters, broker=broker
        )
    ) as cluster:
        yield cluster


def slot_ms(label: str) -> int:
    """Parse a slot header (``2026-11-24T23:00:00.000Z``) back to UTC milliseconds."""
    moment = dt.datetime.strptime(label, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return round(moment.timestamp() * 1000)


def executed_slots(rows: list[dict[str, Any]], entry: str) -> Counter[int]:
    """How often each slot of ``entry`` was executed."""
    return Counter(slot_ms(r["slot"]) for r in rows if r["entry"] == entry)


def interval_slots(every: float, start: float, end: float) -> set[int]:
    """Slots of an epoch-anchored interval entry within [start, end] (seconds)."""
    step = round(every * 1000)
    first = (round(start * 1000) // step + 1) * step
    return set(range(first, round(end * 1000) + 1, step))


def check_exactly_once(
    rows: list[dict[str, Any]], entry: str, every: float, start: float, end: float
) -> None:
    """Every slot of ``entry`` in [start, end] ran exactly once; report what did not."""
    counts = executed_slots(rows, entry)
    expected = interval_slots(every, start, end)
    missed = sorted(s for s in expected if counts[s] == 0)
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    assert (missed, duplicated) == ([], []), f"{entry}: missed {missed}, duplicated {duplicated}"
    assert len(expected) >= (end - start) / every - 1


def master_hash(masters: list[RedisServer], key: str) -> dict[str, int]:
    """The maximum of each field of a hash over the masters that answer."""
    merged: dict[str, int] = {}
    for master in masters:
        try:
            values = master.client().hgetall(key)
        except redis.ConnectionError:
            continue
        for field_name, value in values.items():
            name = field_name.decode()
            merged[name] = max(merged.get(name, 0), int(value))
    return merged

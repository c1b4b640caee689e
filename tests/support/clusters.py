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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from celery import Celery

from celery_singleton_beat import schedule
from celery_singleton_beat.core.schema import Keys
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.testing import (
    CeleryCluster,
    RedisClusterServers,
    RedisServer,
    wait_for,
)

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

    masters: list[RedisServer] | list[RedisClusterServers] = field(default_factory=list)
    """Independent masters, or a Redis Cluster (alone in the list)."""
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

    def skipped(self) -> list[dict[str, Any]]:
        """The ``RunSkipped`` events of the worker: copies it did not run."""
        return self._rows("skipped")


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

    def accepted(self) -> list[dict[str, Any]]:
        """Messages a pool process accepted, as tasks with their own request class note them."""
        return self._rows("accepted")

    def lock(self) -> Redlock:
        return Redlock.from_urls([m.url for m in self.masters], node_timeout=0.1)

    @property
    def results_url(self) -> str:
        """A result backend for workers that store results: the broker's database 1."""
        assert self.broker is not None
        return f"redis://127.0.0.1:{self.broker.port}/1"

    def result(self, task_id: str) -> Any:
        """The ``AsyncResult`` of ``task_id`` as a client reads it from ``results_url``."""
        assert self.broker is not None
        return Celery("results", broker=self.broker.url, backend=self.results_url).AsyncResult(
            task_id
        )


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
    masters: list[RedisServer] | list[RedisClusterServers] | dict[str, Any],
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
def rows_cluster(
    workdir: Path, masters: list[RedisServer], **settings: Any
) -> Iterator[BeatCluster]:
    """Replicas of ``tests.djangoapp.dcb_app`` scheduling django-celery-beat's rows of the
    test's PostgreSQL database (``databases=["postgres"]``)."""
    from django.db import connections

    def make(broker: RedisServer) -> BeatCluster:
        cluster = BeatCluster(
            workdir, "tests.djangoapp.dcb_app", queue="beat-tests", masters=masters,
            broker=broker, settings={"singleton_beat_schedule_source": "django_celery_beat",
                                     **settings},
        )  # fmt: skip
        cluster.base_env["DCB_DB_NAME"] = connections["postgres"].settings_dict["NAME"]
        cluster.base_env["DJANGO_SETTINGS_MODULE"] = "tests.djangoapp.dcb_settings"
        return cluster

    with with_broker(make) as cluster:
        yield cluster


@contextmanager
def task_cluster(
    workdir: Path, masters: list[RedisServer] | list[RedisClusterServers]
) -> Iterator[TaskCluster]:
    """Workers of ``tests.tasks.app`` (none started yet) on ``masters``."""
    with with_broker(
        lambda broker: TaskCluster(
            workdir, TASK_APP, queue=TASK_QUEUE, masters=masters, broker=broker
        )
    ) as cluster:
        yield cluster


def check_pauses_on_failure(cluster: BeatCluster, app: Celery, entry: str) -> dict[str, Any]:
    """Entry ``entry`` (``pause_on_failure: 3``, task ``fail`` failing) pauses itself at
    its third failure, with the last error as its reason, and is sent no more: its pause,
    as ``app`` reads it."""
    wait_for(lambda: entry in schedule.paused(app), 40, f"{entry} paused")
    time.sleep(3)  # what was sent before the pause was seen has run
    ran = len(cluster.executions())
    time.sleep(3)
    assert len(cluster.executions()) == ran  # nothing sent while paused
    assert 3 <= ran <= 5  # the third failure paused it; runs already sent may still fail
    pause: dict[str, Any] = schedule.paused(app)[entry]
    assert pause["by"] == "pause_on_failure"
    assert pause["reason"].startswith("3 consecutive failed runs, the last of slot ")
    assert pause["reason"].endswith(f"RuntimeError: {entry} failed on purpose")
    return pause


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


def master_hash(masters: Servers, key: str) -> dict[str, int]:
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


PREFIX = "singleton-beat:"
Servers = Sequence[RedisServer] | Sequence[RedisClusterServers]
"""Where a store's keys are read back: its masters, or a Redis Cluster."""


def fence_outcomes(masters: Servers, entry: str, keys: Keys | None = None) -> dict[int, str]:
    """Each slot's done mark (``dispatched``, ``skipped_misfire``, ...) over the masters
    (``keys``: the names on a Redis Cluster, hash-tagged)."""
    outcomes: dict[int, str] = {}
    for master in masters:
        client = master.client()
        for key in client.scan_iter((keys or Keys(PREFIX)).all_slots(entry), count=1000):
            value = client.get(key)
            if value and value.startswith(b"done:"):
                slot = int(key.decode().rsplit(":", 1)[1])
                outcomes.setdefault(slot, value.decode()[5:])
    return outcomes


def slot_accounting(
    rows: list[dict[str, Any]],
    masters: Servers,
    schedule: dict[str, dict[str, Any]],
    window: tuple[float, float],
    keys: Keys | None = None,
) -> list[str]:
    """What went wrong with the slots of ``schedule`` in ``window`` (seconds), one line per
    fault: a task id executed twice, a slot executed twice, executed and counted as
    skipped, neither, or a skip count that disagrees with the skip marks. Empty: each slot
    ran exactly once or was counted as skipped with its reason, never both."""
    faults = []
    twice = sorted(t for t, n in Counter(r["task_id"] for r in rows).items() if n > 1)
    if twice:
        faults.append(f"task ids executed twice: {twice}")
    for entry, spec in schedule.items():
        expected = interval_slots(spec["every"], window[0], window[1])
        counts = executed_slots(rows, entry)
        executed = set(counts)
        outcomes = fence_outcomes(masters, entry, keys)
        skipped = {s for s, outcome in outcomes.items() if outcome.startswith("skipped")}
        if again := sorted(s for s, n in counts.items() if n > 1):
            faults.append(f"{entry}: slots executed twice: {again}")
        if both := sorted(executed & skipped):
            faults.append(f"{entry}: executed and counted as skipped: {both}")
        if missing := sorted(expected - executed - skipped):
            marks = {slot: outcomes.get(slot) for slot in missing}
            faults.append(f"{entry}: neither executed nor counted: {marks}")
        counted = master_hash(masters, (keys or Keys(PREFIX)).entry(entry)).get("skipped", 0)
        if counted != len(skipped):
            faults.append(f"{entry}: skip count {counted} != {len(skipped)} marks")
    return faults


def check_every_slot_accounted(
    cluster: BeatCluster,
    masters: Sequence[RedisServer],
    schedule: dict[str, dict[str, Any]],
    window: tuple[float, float],
) -> None:
    """No task id ran twice; each slot in the window ran, or was counted as skipped with
    its reason, never both."""
    assert slot_accounting(cluster.executions(), masters, schedule, window) == []

"""Series recorded from the library's own ``/metrics``: a beat replica in this process, on a
real Redis master, with a health port; it dispatches slots and misses some (an entry
whose shared state is ten seconds old, misfire ``skip``) and holds three paused (one by
its settings, one by hand, one by its ``pause_on_failure`` policy after a failed run),
while a singleton task here meets its key held, so that every metric the alert rules and
the dashboard read has a sample with its real labels."""

from __future__ import annotations

import time
import urllib.request
from typing import NamedTuple

from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from celery_singleton_beat import SingletonTask, events, schedule
from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.sources.schedule_document import ScheduleDocument
from celery_singleton_beat.tasks.failures import count_failure
from celery_singleton_beat.testing import RedisServer

PREFIX = "celery_singleton_beat_"


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float


def scrape_metrics(master: RedisServer) -> tuple[str, list[Sample]]:
    """``/metrics`` of a beat replica after a second and a half of work, as text and parsed
    (the library's samples only)."""
    app = Celery("scraped", broker="memory://", set_as_current=False)
    app.conf.update(
        singleton_beat_redis_urls=[master.url], singleton_beat_health_port=0,
        beat_schedule={
            "tick": {"task": "tick", "schedule": 1.0},
            "late": {"task": "tick", "schedule": 1.0,
                     "options": {"singleton_beat": {"misfire": "skip"}}},
            "held": {"task": "tick", "schedule": 1.0,
                     "options": {"singleton_beat": {"paused": True}}},
            "stopped": {"task": "tick", "schedule": 1.0},
            "broken": {"task": "tick", "schedule": 1.0,
                       "options": {"singleton_beat": {"pause_on_failure": 1}}},
        },
    )  # fmt: skip
    now = round(time.time() * 1000)
    Runtime.of(app).store.init([("late", 1000)], now - 10_000)  # ten slots owed
    schedule.pause(app, "stopped", by="ops")
    ScheduleDocument.shared(app).edit(
        lambda doc: count_failure(doc, "broken", str(now), 1, "ValueError: no data")
    )
    sched = Scheduler(app=app)
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            time.sleep(min(0.1, sched.tick()))
        _task_metrics(app, master)
        assert sched._health is not None
        url = f"http://127.0.0.1:{sched._health.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    finally:
        sched.close()
        Runtime.of(app).close_store()
    samples = [
        Sample(s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(PREFIX)
    ]
    return text, samples


def _task_metrics(app: Celery, master: RedisServer) -> None:
    """A worker's metrics: a singleton task run while its key is held (contention, a
    message not run), then run; a run that lost its lock."""

    @app.task(base=SingletonTask, singleton_key="scraped", shared=False, name="scraped.report")
    def report() -> str:
        return "done"

    locks = Redlock.from_urls([master.url])
    holder = locks.acquire("task:scraped", ttl=30)
    assert holder is not None
    report.apply()
    locks.release(holder)
    report.apply()
    events.emit(events.LockLost(task=report.name, task_id="t", key="task:scraped", fence=1,
                                worker="w"))  # fmt: skip

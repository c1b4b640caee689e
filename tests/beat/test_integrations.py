"""What Sentry Crons and log handlers see of each slot the scheduler sends.

In-process scheduler with an injected wall clock over a real Redis master, which is also
the broker; the published messages are read back from the broker's queue.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import sentry_sdk
from celery import Celery
from celery.schedules import crontab
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.transport import Transport

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.slots import slot_task_id
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import FakeClock, RedisServer

SLOT = "2026-06-01T12:00:00.000Z"
SLOT_MS = 1_780_315_200_000


class Captured(Transport):  # type: ignore[misc]
    """Keeps every envelope; nothing leaves the process."""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def check_ins(self) -> list[dict[str, Any]]:
        return [
            item.payload.json
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == "check_in" and item.payload.json is not None
        ]


@pytest.fixture
def broker(redis_cluster: Callable[[int], list[RedisServer]]) -> Iterator[tuple[str, str]]:
    master = redis_cluster(1)[0]
    yield master.url, f"redis://127.0.0.1:{master.port}/1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock("2026-06-01T11:59:59")


def send_one_slot(urls: tuple[str, str], clock: FakeClock) -> list[dict[str, Any]]:
    """Run the scheduler across 12:00 with one every-minute entry: the queued messages."""
    master, broker_url = urls
    app = Celery("integrations", broker=broker_url)
    Runtime.of(app).clock = clock
    app.conf.update(
        singleton_beat_redis_urls=[master],
        beat_schedule={"minutely": {"task": "reports.minutely", "schedule": crontab()}},
    )
    sched = Scheduler(app=app)
    try:
        sched.tick()
        clock.now += 1.5
        sched.tick()
    finally:
        sched.close()
    queue = redis.Redis.from_url(broker_url)
    return [json.loads(raw) for raw in queue.lrange("celery", 0, -1)]


def test_sentry_crons_monitor_headers_ride_on_each_slot_and_a_check_in_is_sent(
    broker: tuple[str, str], clock: FakeClock
) -> None:
    transport = Captured()
    sentry_sdk.init(
        dsn="https://public@sentry.invalid/1",
        transport=transport,
        integrations=[CeleryIntegration(monitor_beat_tasks=True)],
        default_integrations=False,
    )
    try:
        (message,) = send_one_slot(broker, clock)
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
    headers = message["headers"]
    assert headers["sentry-monitor-slug"] == "minutely"
    assert headers["sentry-monitor-config"] == {
        "schedule": {"type": "crontab", "value": "* * * * *"},
        "timezone": "UTC",
    }
    (check_in,) = transport.check_ins()
    assert (check_in["monitor_slug"], check_in["status"]) == ("minutely", "in_progress")
    assert headers["sentry-monitor-check-in-id"] == check_in["check_in_id"]
    assert (headers["id"], headers["singleton_beat_slot"], headers["singleton_beat_entry"]) == (
        slot_task_id("minutely", SLOT_MS), SLOT, "minutely"
    )  # fmt: skip


def test_the_sending_due_task_line_is_celery_beats_with_the_slot_fields(
    broker: tuple[str, str], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        send_one_slot(broker, clock)
    (line,) = [r for r in caplog.records if "Sending due task" in r.getMessage()]
    assert line.name == "celery.beat"
    assert line.getMessage() == (
        f"Scheduler: Sending due task minutely (reports.minutely) for slot {SLOT}"
    )
    fields = (line.entry, line.slot, line.task_id)  # type: ignore[attr-defined]
    assert fields == ("minutely", SLOT, slot_task_id("minutely", SLOT_MS))
    assert line.replica == f"{socket.gethostname()}:{os.getpid()}"  # type: ignore[attr-defined]


def test_a_missed_slots_warning_carries_the_entry_slot_and_task_id_fields(
    broker: tuple[str, str], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    master, broker_url = broker
    app = Celery("integrations", broker=broker_url)
    Runtime.of(app).clock = clock
    app.conf.update(
        singleton_beat_redis_urls=[master],
        beat_schedule={"minutely": {"task": "reports.minutely", "schedule": crontab()}},
    )
    sched = Scheduler(app=app)
    try:
        sched.tick()
        clock.now += 10 * 60 + 1.5  # down from 11:59:59 to 12:10:00.5
        with caplog.at_level(logging.WARNING):
            sched.tick()
    finally:
        sched.close()
    (line,) = [r for r in caplog.records if "missed" in r.getMessage()]
    newest = SLOT_MS + 9 * 60_000
    assert line.getMessage() == (
        "singleton beat: entry 'minutely' missed 10 slot(s) up to 2026-06-01T12:09:00.000Z "
        "(misfire policy coalesce)"
    )
    fields = (line.entry, line.slot, line.task_id)  # type: ignore[attr-defined]
    assert fields == ("minutely", "2026-06-01T12:09:00.000Z", slot_task_id("minutely", newest))

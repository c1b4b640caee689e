"""``schedule.backfill``: the request kept for the replicas, checked before it is written,
on a real Redis master."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest
from celery import Celery

from celery_singleton_beat import schedule
from celery_singleton_beat.core.schema import Outcome
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.sources.schedule_document import BACKFILL, HAD_RUN, ScheduleDocument
from celery_singleton_beat.stores import SlotOutcome
from celery_singleton_beat.testing import RedisServer

UTC = dt.timezone.utc
MINUTE = 60_000


@pytest.fixture
def app(redis_cluster: Callable[[int], list[RedisServer]]) -> Celery:
    (master,) = redis_cluster(1)
    app = Celery("backfill-api", broker="memory://", set_as_current=False)
    app.conf.singleton_beat_redis_urls = master.url
    app.conf.beat_schedule = {"report": {"task": "reports.build", "schedule": 60.0}}
    return app


def anchored(app: Celery) -> int:
    """Store the entry's anchor as beat's first sighting does; the newest whole minute."""
    now = round(time.time() * 1000)
    Runtime.of(app).store.init([("report", MINUTE)], now)
    return now - now % MINUTE


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, UTC)


def test_a_backfill_holds_every_slot_of_the_range_paced_at_its_rate(app: Celery) -> None:
    newest = anchored(app)
    backfill_id = schedule.backfill(app, "report", at(newest - 30 * MINUTE), at(newest), rate=3)
    _rev, doc = ScheduleDocument(Runtime.of(app).store).read()
    request = doc["backfills"][backfill_id]
    assert request["slots"] == [newest - (30 - i) * MINUTE for i in range(30)]
    assert (request["entry"], request["rate"]) == ("report", 3.0)
    assert request["until"] == request["at"] + 10_000 + 3_600_000
    progress = schedule.backfill_progress(app, backfill_id)
    assert {k: progress[k] for k in ("total", "settled", "sent", "had_run", "state")} == {
        "total": 30, "settled": 0, "sent": 0, "had_run": 0, "state": "running",
    }  # fmt: skip
    assert progress["replicas"] == 0, "no beat replica heartbeats in this test"
    assert [b["id"] for b in schedule.backfill_requests(app)] == [backfill_id]


def test_progress_counts_the_slots_the_replicas_settled(app: Celery) -> None:
    newest = anchored(app)
    backfill_id = schedule.backfill(app, "report", at(newest - 2 * MINUTE), at(newest))
    store = Runtime.of(app).store
    first, second = newest - 2 * MINUTE, newest - MINUTE
    marks = [("report" + BACKFILL, first), ("report" + BACKFILL, second)]
    store.claim(marks, "r1", ttl=5, retention=60)
    store.finish(
        [SlotOutcome(*marks[0], Outcome.DISPATCHED.value, 0, 0),
         SlotOutcome(*marks[1], HAD_RUN, 0, 0)], "r1", 60,
    )  # fmt: skip
    progress = schedule.backfill_progress(app, backfill_id)
    assert (progress["settled"], progress["sent"], progress["had_run"], progress["state"]) == (
        2, 1, 1, "done",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("given", "named", "accepted"),
    [
        ((-10, 5, 10), "end", "a time not after now"),
        ((5, 10, 10), "start", "a time in the past; this one is in the future"),
        ((-10, -20, 10), "end", "a time after start"),
        ((-10, -1, 0), "rate", "a positive number of slots a second"),
        ((-25 * 60, -1, 10), "start", "whether it ran, is kept singleton_beat_fence_retention"),
    ],
)
def test_a_range_or_rate_that_cannot_be_backfilled_is_refused_naming_it(
    app: Celery, given: tuple[int, int, float], named: str, accepted: str
) -> None:
    """(start, end) in minutes from the newest slot, and the rate."""
    start, end, rate = given
    newest = anchored(app)
    with pytest.raises(ConfigurationError) as refused:
        schedule.backfill(app, "report", at(newest + start * MINUTE), at(newest + end * MINUTE),
                          rate=rate)  # fmt: skip
    assert refused.value.name == named
    assert accepted in str(refused.value)
    _rev, doc = ScheduleDocument(Runtime.of(app).store).read()
    assert doc["backfills"] == {}


def test_a_name_no_source_gives_is_refused_with_the_names_known(app: Celery) -> None:
    newest = anchored(app)
    with pytest.raises(ConfigurationError, match="one of 'report'"):
        schedule.backfill(app, "reprot", at(newest - MINUTE), at(newest))


def test_an_interval_entry_beat_never_scheduled_has_no_slots_to_backfill_yet(
    app: Celery,
) -> None:
    now = round(time.time() * 1000)
    with pytest.raises(ConfigurationError, match="an entry beat has scheduled already"):
        schedule.backfill(app, "report", at(now - 10 * MINUTE), at(now))

"""``schedule.run_requests``: the runs asked for now, read from a real Redis master, each
pending until the replica that sends it marks it sent."""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from celery_singleton_beat import schedule
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.schedule import api
from celery_singleton_beat.sources.document import ControlSource
from celery_singleton_beat.testing import RedisServer


@pytest.fixture
def app(redis_cluster: Callable[[int], list[RedisServer]]) -> Celery:
    (master,) = redis_cluster(1)
    app = Celery("api", broker="memory://", set_as_current=False)
    app.conf.singleton_beat_redis_urls = master.url
    app.conf.beat_schedule = {"report": {"task": "reports.build", "schedule": 60.0}}
    return app


def test_a_run_now_is_pending_with_who_asked_until_a_replica_sent_it(app: Celery) -> None:
    before = round(time.time() * 1000)
    run_id = schedule.run_now(app, "report", by="ops")
    (pending,) = schedule.run_requests(app)
    assert pending["at"] - pending["asked"] == schedule.RUN_NOW_DELAY_MS
    assert before <= pending["asked"] <= round(time.time() * 1000)
    assert {k: v for k, v in pending.items() if k not in ("asked", "at")} == {
        "id": run_id, "entry": "report", "by": "ops", "state": "pending",
    }  # fmt: skip

    control = ControlSource(app)  # what the replica that sent the run calls
    try:
        control.published(f"report{schedule.RUN_NOW}{run_id}", pending["at"], time.time())
    finally:
        control.close()
    assert [(r["id"], r["state"]) for r in schedule.run_requests(app)] == [(run_id, "sent")]


def test_a_run_now_no_replica_sent_within_ten_seconds_of_its_time_is_overdue(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = schedule.run_now(app, "report")
    (run,) = schedule.run_requests(app)
    late = (run["at"] + schedule.RUN_NOW_PENDING_MS) / 1000
    clock: Any = types.SimpleNamespace(time=lambda: late)
    monkeypatch.setattr(api, "time", clock)
    assert [(r["id"], r["state"]) for r in schedule.run_requests(app)] == [(run_id, "overdue")]
    assert schedule.run_now(app, "report") != run_id, "a new request makes a new run"


def test_a_bad_timezone_of_a_runtime_entry_names_the_argument_given(app: Celery) -> None:
    app.conf.singleton_beat_schedule_source = ["beat_schedule", "runtime"]
    app.task(name="reports.nightly", shared=False)(lambda: None)
    with pytest.raises(ConfigurationError) as raised:
        schedule.add(app, "rt", "reports.nightly", cron="30 2 * * *", timezone="Mars/Olympus")
    assert raised.value.name == "timezone"
    assert str(raised.value).startswith("timezone = 'Mars/Olympus' is not valid: ")
    assert schedule.entries(app) == {}


def test_remove_and_run_now_of_an_unknown_name_say_what_a_name_must_be(app: Celery) -> None:
    with pytest.raises(ConfigurationError) as removed:
        schedule.remove(app, "nosuch")
    assert str(removed.value) == (
        "name = 'nosuch' is not valid: the name of a runtime entry, none yet."
    )
    with pytest.raises(ConfigurationError) as ran:
        schedule.run_now(app, "nosuch")
    assert str(ran.value) == (
        "name = 'nosuch' is not valid: the name of an entry of a schedule source, one of 'report'."
    )

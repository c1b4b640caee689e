"""A django-celery-beat row carries its schedule policies in its ``headers`` JSON, under
``"singleton_beat"``: the message it sends (the scheduler in this process on a fake
clock), a bad value leaving only that row out, and a row whose runs keep failing paused by
real beat and worker processes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery import Celery
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from celery_singleton_beat.testing import FakeClock, RedisServer
from django_celery_singleton_beat.sources import DjangoCeleryBeatSource
from tests.support.clocked import ROW_POLICIES, check_row_policies_sent, published, replica_of, run
from tests.support.clusters import check_pauses_on_failure, rows_cluster

APP = Celery("row-policies", broker="memory://", set_as_current=False)
in_process = pytest.mark.django_db(transaction=True)  # beat reads in autocommit, as here


def every(seconds: int, using: str = "default") -> IntervalSchedule:
    return IntervalSchedule.objects.using(using).create(
        every=seconds, period=IntervalSchedule.SECONDS
    )


def row(name: str, headers: dict[str, object], using: str = "default", **fields: object) -> None:
    PeriodicTask.objects.using(using).create(
        name=name, task=fields.pop("task", "t"), interval=every(fields.pop("every", 10), using),
        args=json.dumps([name]), headers=json.dumps(headers), **fields,
    )  # fmt: skip


@in_process
def test_a_row_s_header_policies_jitter_its_sends_give_the_slot_and_mark_its_failure_limit(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> None:
    row("herd", {"trace": "abc", "singleton_beat": ROW_POLICIES})
    clock = FakeClock("2026-01-01T00:00:00")
    beat = replica_of("django_celery_beat", redis_cluster(1)[0], clock)
    with beat as replica, published(clock) as sent:
        run(replica, clock, "2026-01-01T00:00:45", step=0.25)

    check_row_policies_sent(sent, "herd", step=0.25)
    assert {m.headers["periodic_task_name"] for m in sent} == {"herd"}


@in_process
def test_a_row_with_a_bad_header_policy_is_left_out_with_one_line_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    row("nightly", {"singleton_beat": {"jitter": -1}})
    row("hourly", {"singleton_beat": {"jitter": 1}})
    with caplog.at_level(logging.ERROR):
        specs = DjangoCeleryBeatSource(APP).entries()

    assert sorted(specs) == ["hourly"]
    assert specs["hourly"]["options"]["singleton_beat"] == {"jitter": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "singleton beat: PeriodicTask 'nightly' is left out: ConfigurationError: PeriodicTask "
        "'nightly' headers['singleton_beat']['jitter'] = -1 is not valid: a number of seconds, "
        "0 (default) or more."
    ]


@in_process
def test_start_and_end_in_a_row_s_header_policies_are_refused_naming_the_row_s_column(
    caplog: pytest.LogCaptureFixture,
) -> None:
    row("started", {"singleton_beat": {"start_time": "2026-01-01T00:00:00Z"}})
    row("ended", {"singleton_beat": {"end_time": "2026-01-01T00:00:00Z"}})
    with caplog.at_level(logging.ERROR):
        assert DjangoCeleryBeatSource(APP).entries() == {}

    assert sorted(r.getMessage().split(": ", 3)[3] for r in caplog.records) == [
        "PeriodicTask 'ended' headers['singleton_beat']['end_time'] = '2026-01-01T00:00:00Z' is "
        "not valid: the row's expires column (no slot from it on).",
        "PeriodicTask 'started' headers['singleton_beat']['start_time'] = '2026-01-01T00:00:00Z' "
        "is not valid: the row's start_time column (no slot before it).",
    ]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_a_row_failing_three_times_pauses_with_its_reason_and_sends_nothing_more(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    row("flaky", {"singleton_beat": {"pause_on_failure": 3}}, "postgres", task="fail", every=1)
    operator = Celery("operator", broker="memory://", set_as_current=False)
    operator.conf.singleton_beat_redis_urls = [m.url for m in three_masters]
    with rows_cluster(tmp_path, three_masters) as cluster:
        assert cluster.broker is not None
        redis.Redis.from_url(cluster.broker.url).set("failing", 1)
        cluster.start_worker("w1")
        cluster.start_replica("r1")
        check_pauses_on_failure(cluster, operator, "flaky")

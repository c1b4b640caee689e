"""Schedule sources at start: what is refused, and how a source's schedule is read."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab
from django_celery_beat.tzcrontab import TzAwareCrontab

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.observe import events
from celery_singleton_beat.sources import EntrySpec, MergedSource, ScheduleSource
from celery_singleton_beat.sources.beat_schedule import BeatScheduleSource
from celery_singleton_beat.testing import RedisServer

UTC = dt.timezone.utc


class ExtraSource(ScheduleSource):
    """A second source that also has a ``report`` entry (until ``gone`` is set)."""

    name = "extra"
    gone = False

    def version(self) -> Hashable:
        return self.gone

    def entries(self) -> Mapping[str, EntrySpec]:
        return {} if self.gone else {"report": {"task": "t", "schedule": 60.0}}


def app_with(source: object) -> Celery:
    app = Celery("sources", broker="memory://", set_as_current=False)
    app.conf.update(
        singleton_beat_redis_urls="redis://127.0.0.1:1/0",
        singleton_beat_schedule_source=source,
        beat_schedule={"report": {"task": "t", "schedule": 10.0}},
    )
    return app


def ms(*when: int) -> int:
    return round(dt.datetime(*when, tzinfo=UTC).timestamp() * 1000)


def test_an_entry_name_in_two_sources_is_taken_from_the_one_listed_first_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_with("beat_schedule")
    extra = ExtraSource(app)
    merged = MergedSource(app, [BeatScheduleSource(app), extra])
    conflict = (
        "entry 'report' is given by both 'beat_schedule' and 'extra' "
        "(singleton_beat_schedule_source): beat leaves the copy of 'extra' out, "
        "'beat_schedule' is listed first; rename or remove one of them"
    )
    with caplog.at_level(logging.INFO):
        for _read in range(3):
            assert merged.entries() == {"report": {"task": "t", "schedule": 10.0}}
        assert [str(c) for c in merged.conflicts] == [conflict]
        assert merged.source_of("report") == "beat_schedule"
        extra.gone = True
        assert merged.entries() == {"report": {"task": "t", "schedule": 10.0}}
        assert merged.conflicts == []
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", f"singleton beat: {conflict}"),
        (
            "WARNING",
            "singleton beat: entry 'report' is no longer given by both 'beat_schedule' and 'extra'",
        ),
    ]
    extra.gone = False
    flipped = MergedSource(app, [extra, BeatScheduleSource(app)])
    assert flipped.entries() == {"report": {"task": "t", "schedule": 60.0}}
    assert flipped.source_of("report") == "extra"
    flipped.close()


class CountingSource(ExtraSource):
    """``report`` (until ``gone``), and the runs it is told of."""

    name = "counting"

    def __init__(self, app: Celery) -> None:
        super().__init__(app)
        self.told: list[tuple[str, int]] = []

    def published_many(self, runs: Sequence[tuple[str, int]], sent_at: float) -> None:
        self.told += runs


def test_the_run_of_an_entry_the_last_read_left_out_is_told_to_the_source_it_came_from() -> None:
    """Beat decides the slots an entry's old schedule had due when the change was seen
    (sent after the read that left the entry out): its source still counts that run."""
    app = app_with("beat_schedule")
    counting = CountingSource(app)
    merged = MergedSource(app, [counting])
    assert list(merged.entries()) == ["report"]
    counting.gone = True
    assert merged.entries() == {}
    merged.published_many([("report", 16_000), ("unknown", 16_000)], 16.1)
    assert counting.told == [("report", 16_000)]


def test_closing_the_sources_withdraws_the_conflicts_they_counted() -> None:
    app = app_with("beat_schedule")
    seen: list[events.Event] = []
    unsubscribe = events.subscribe(seen.append)
    try:
        merged = MergedSource(app, [BeatScheduleSource(app), ExtraSource(app)])
        merged.entries()
        merged.close()
    finally:
        unsubscribe()
    conflicts = [e for e in seen if isinstance(e, events.EntryConflict)]
    assert [(e.entry, e.gone) for e in conflicts] == [("report", False), ("report", True)]
    assert merged.conflicts == []


def test_an_unknown_source_is_refused_at_start_naming_the_setting_and_the_accepted_form() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Scheduler(app_with("no_such_source"))
    assert str(refused.value) == (
        "singleton_beat_schedule_source = 'no_such_source' is not valid: 'beat_schedule' "
        "(default), 'django_celery_beat', 'sqlalchemy_celery_beat', 'runtime', the dotted "
        "path of a ScheduleSource subclass, or a list of these."
    )


def test_a_tz_aware_crontab_fires_in_its_own_zone_and_a_plain_one_in_the_apps() -> None:
    app = app_with("beat_schedule")
    nine_in_new_york = TzAwareCrontab(minute=0, hour=9, tz=ZoneInfo("America/New_York"))
    entry = Entry(name="report", task="t", schedule=nine_in_new_york, app=app)
    plain = Entry(name="plain", task="t", schedule=crontab(minute=0, hour=9), app=app)
    berlin = ZoneInfo("Europe/Berlin")
    assert Plan.build(entry, berlin, 300.0).slots.next_after(ms(2026, 11, 24)) == ms(
        2026, 11, 24, 14
    )
    assert Plan.build(plain, berlin, 300.0).slots.next_after(ms(2026, 11, 24)) == ms(
        2026, 11, 24, 8
    )


class FlakySource(ScheduleSource):
    """A source whose database goes away when ``down`` is set (an injected error)."""

    name = "flaky"
    down = False

    def version(self) -> Hashable:
        if self.down:
            raise ConnectionError("database unreachable")
        return 1

    def entries(self) -> Mapping[str, EntrySpec]:
        if self.down:
            raise ConnectionError("database unreachable")
        return {"nightly": {"task": "n", "schedule": 60.0}}


def test_a_source_that_cannot_be_read_keeps_its_entries_and_holds_up_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_with("beat_schedule")
    flaky = FlakySource(app)
    merged = MergedSource(app, [BeatScheduleSource(app), flaky])
    assert sorted(merged.entries()) == ["nightly", "report"]
    flaky.down = True
    with caplog.at_level(logging.ERROR):
        assert merged.version() == (0, ("unreadable", "flaky"))
        assert sorted(merged.entries()) == ["nightly", "report"]
    assert [r.getMessage() for r in caplog.records] == [
        "singleton beat: the schedule source 'flaky' cannot be read, keeping its entries read "
        "last: ConnectionError: database unreachable"
    ]
    flaky.down = False
    assert merged.version() == (0, 1)


class HintingSource(ScheduleSource):
    """A source whose version never changes by itself and that is told of changes."""

    name = "hinting"

    def __init__(self, app: Celery) -> None:
        super().__init__(app)
        self.told = False
        self.reads = 0
        self.rev = 0

    def version(self) -> Hashable:
        return self.rev

    def hinted(self) -> bool:
        told, self.told = self.told, False
        return told

    def entries(self) -> Mapping[str, EntrySpec]:
        self.reads += 1
        return {}


def test_a_source_told_of_a_change_is_read_at_the_next_tick_not_at_the_next_poll() -> None:
    from celery_singleton_beat.sources.watcher import POLL_EVERY, SourceWatcher

    source = HintingSource(Celery("hint", set_as_current=False))
    watcher = SourceWatcher(source)
    watcher.first()
    now = watcher.next_poll - POLL_EVERY / 2  # between two polls
    assert watcher.poll(now) is None
    source.rev, source.told = 1, True
    assert watcher.poll(now) == {} and source.reads == 2
    assert watcher.poll(now) is None, "one notice, one read (then again at the poll)"


def test_a_heartbeat_that_read_a_newer_runtime_revision_hints_at_it_once(
    redis_cluster: Callable[[int], list[RedisServer]],
) -> None:
    from celery_singleton_beat.runtime import Runtime
    from celery_singleton_beat.sources.document import RuntimeSource

    app = Celery("hint-runtime", broker="memory://", set_as_current=False)
    app.conf.singleton_beat_redis_urls = [redis_cluster(1)[0].url]
    source = RuntimeSource(app)
    try:
        version = source.version()
        assert source.hinted() is False
        Runtime.of(app).store.saw_schedule_revision(int(version) + 1)  # as a heartbeat does
        assert (source.hinted(), source.hinted()) == (True, False)
    finally:
        source.close()
        Runtime.of(app).close_store()


def test_a_new_version_is_read_once_more_shortly_after_for_a_row_written_just_after_it() -> None:
    from celery_singleton_beat.sources.watcher import AGAIN_AFTER, POLL_EVERY, SourceWatcher

    source = HintingSource(Celery("again", set_as_current=False))
    watcher = SourceWatcher(source)
    watcher.first()
    source.rev = 1
    now = watcher.next_poll
    assert watcher.poll(now) == {} and source.reads == 2
    assert watcher.poll(now + AGAIN_AFTER) == {} and source.reads == 3, "read once more"
    assert watcher.poll(now + 2 * AGAIN_AFTER) is None
    assert watcher.next_poll == now + AGAIN_AFTER + POLL_EVERY

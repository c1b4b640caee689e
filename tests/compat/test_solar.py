"""Solar entries on every supported Celery: slots from ephem, not from Celery's private search."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import ephem
import pytest
from celery import Celery
from celery.schedules import solar

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.slots import SolarSlots, slot_label
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.testing import RedisServer

UTC = dt.timezone.utc
LONDON = (51.5074, -0.1278)


def ms(text: str) -> int:
    return round(dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def ephem_event(method: str, horizon: str, start: dt.datetime, **kwargs: Any) -> str:
    """The event as ephem gives it, rounded up to the whole second, as an ISO label."""
    observer = ephem.Observer()
    observer.lat, observer.lon = str(LONDON[0]), str(LONDON[1])
    observer.elev, observer.pressure, observer.horizon = 0, 0, horizon
    when = getattr(observer, method)(ephem.Sun(), start=ephem.Date(start), **kwargs)
    moment = when.datetime().replace(tzinfo=UTC)
    whole = dt.datetime.fromtimestamp(-(-moment.timestamp() // 1), UTC)
    return whole.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_london_sunrise_and_sunset_slots_are_ephems_times_to_the_second() -> None:
    start = ms("2026-06-21T00:00")
    sunrise = SolarSlots(solar("sunrise", *LONDON)).next_after(start)
    sunset = SolarSlots(solar("sunset", *LONDON)).next_after(start)
    assert sunrise is not None
    assert sunset is not None
    assert slot_label(sunrise) == "2026-06-21T03:43:09.000Z"
    assert slot_label(sunset) == "2026-06-21T20:21:31.000Z"
    midnight = dt.datetime(2026, 6, 21)
    assert slot_label(sunrise) == ephem_event("next_rising", "-0:34", midnight)
    assert slot_label(sunset) == ephem_event("next_setting", "-0:34", midnight)


def test_civil_dawn_uses_the_suns_centre_six_degrees_below_the_horizon() -> None:
    dawn = SolarSlots(solar("dawn_civil", *LONDON)).next_after(ms("2026-06-21T00:00"))
    assert dawn is not None
    assert slot_label(dawn) == "2026-06-21T02:55:20.000Z"
    expected = ephem_event("next_rising", "-6", dt.datetime(2026, 6, 21), use_center=True)
    assert slot_label(dawn) == expected


def test_the_slot_after_a_sunrise_is_the_next_days_sunrise() -> None:
    slots = SolarSlots(solar("sunrise", *LONDON))
    following = slots.next_after(ms("2026-06-21T03:43:09"))
    assert following is not None
    assert slot_label(following) == "2026-06-22T03:43:23.000Z"
    assert slot_label(following) == ephem_event("next_rising", "-0:34", dt.datetime(2026, 6, 22))


def test_a_sunrise_in_the_polar_day_is_the_first_one_after_it() -> None:
    svalbard = SolarSlots(solar("sunrise", 78.22, 15.65))
    found = svalbard.next_after(ms("2026-06-21T00:00"))
    assert found is not None
    assert slot_label(found) == "2026-08-24T23:33:24.000Z"


@pytest.fixture
def sunrise_scheduler(
    redis_cluster: Callable[[int], list[RedisServer]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Scheduler, list[float]]]:
    now = [dt.datetime(2026, 6, 21, 3, 40, tzinfo=UTC).timestamp()]
    master = redis_cluster(1)[0]
    app = Celery("solar-tests", broker="memory://")
    Runtime.of(app).clock = lambda: now[0]
    app.conf.update(
        singleton_beat_redis_urls=[master.url],
        beat_schedule={"dawn-job": {"task": "t", "schedule": solar("sunrise", *LONDON)}},
    )
    sched = Scheduler(app=app)
    yield sched, now
    sched.close()


def test_beat_fires_a_solar_entry_at_sunrise(
    sunrise_scheduler: tuple[Scheduler, list[float]], fired: list[events.SlotFired]
) -> None:
    sched, now = sunrise_scheduler
    sched.tick()
    assert fired == [], "before sunrise nothing is due"
    now[0] = dt.datetime(2026, 6, 21, 3, 43, 10, tzinfo=UTC).timestamp()
    sched.tick()
    assert [(e.entry, e.slot) for e in fired] == [
        ("dawn-job", dt.datetime(2026, 6, 21, 3, 43, 9, tzinfo=UTC))
    ]

"""A django-celery-beat row edited just before a slot and read just after it: the slot is
still sent, as its old schedule's, and counted on the row (a real database, the scheduler
in this process on a fake clock).

The replica ticks at .08 and .58 of each second and reads the rows' version at .08::

    15.58 tick ── 15.8 save ── 16.0 slot ── 16.08 tick: the row read again (slot due)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.core.slots import slot_label
from celery_singleton_beat.observe import events
from celery_singleton_beat.testing import FakeClock, RedisServer
from tests.support.clocked import replica_of, run

pytestmark = pytest.mark.django_db(transaction=True)  # beat reads in autocommit, as here


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.create(every=seconds, period=IntervalSchedule.SECONDS)


@pytest.fixture
def clock() -> FakeClock:
    """Ticks at .08 and .58 read the rows' version at .08 (and heartbeat at .58)."""
    return FakeClock("2026-01-01T00:00:00.58")


@pytest.fixture
def replica(
    redis_cluster: Callable[[int], list[RedisServer]], clock: FakeClock
) -> Iterator[Scheduler]:
    """A replica of django-celery-beat's rows, on ``clock``."""
    with replica_of("django_celery_beat", redis_cluster(1)[0], clock) as sched:
        yield sched


def test_a_row_saved_just_before_a_slot_and_read_just_after_it_still_sends_the_slot(
    replica: Scheduler, clock: FakeClock, fired: list[events.SlotFired]
) -> None:
    row = PeriodicTask.objects.create(name="db-4s", task="t", interval=every(8))
    run(replica, clock, "2026-01-01T00:00:15.6", step=0.5)
    row.refresh_from_db()  # as the admin's form loads the row it saves
    row.interval = every(4)
    row.save()
    run(replica, clock, "2026-01-01T00:00:24.1", step=0.5)
    sent = [slot_label(round(e.slot.timestamp() * 1000)) for e in fired]
    assert sent == [f"2026-01-01T00:00:{s:02d}.000Z" for s in (8, 16, 20, 24)]
    row.refresh_from_db()
    assert row.total_run_count == 4

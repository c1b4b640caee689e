"""Beat on a Sentinel-managed primary with a replica, through a failover: three replicas,
a worker recording every execution, the primary SIGKILLed mid-run, replicas started
during the failover. Counted: no task id or slot executed twice, every slot executed or
counted as missed, no beat process exits, and the first publish after the kill within
the failover time plus two seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celery_singleton_beat.testing import SentinelGroup, sentinel_group
from tests.support.failover import LAGGED, Failover, through_failover

pytestmark = pytest.mark.slow


def on_sentinel(tmp_path: Path, group: SentinelGroup, **scenario: Any) -> Failover:
    options = {"singleton_beat_redis_transport_options": group.transport_options}
    return through_failover(tmp_path, group, group, **options, **scenario)


def test_a_failover_in_step_sends_every_slot_once_and_beat_follows_the_new_primary(
    tmp_path: Path,
) -> None:
    """The three replicas run through the failover; a fourth starts during it."""
    with sentinel_group() as group:
        on_sentinel(tmp_path, group, lag=False).check()


def test_a_failover_with_lost_writes_never_sends_a_slot_twice_or_uncounted(
    tmp_path: Path,
) -> None:
    """The replica misses the last 2.5 s of writes: beat counted none of them (its
    replica did not acknowledge them, so nothing was published meanwhile), the promoted
    replica has every write beat counted, and the replicas started during the failover
    resume from there."""
    with sentinel_group() as group:
        on_sentinel(tmp_path, group, **LAGGED).check()


def test_without_replica_acknowledgements_a_failover_with_lost_writes_breaks_the_count(
    tmp_path: Path,
) -> None:
    """The same run with ``singleton_beat_redis_min_replicas = 0``: the slots sent in the
    last 2.5 s before the kill are lost with the writes (the promoted replica does not
    know they ran), so a replica that reads the progress there sends them again or
    counts them as missed."""
    with sentinel_group() as group:
        run = on_sentinel(tmp_path, group, **LAGGED, singleton_beat_redis_min_replicas=0)
    assert run.before_kill >= 8, "beat published before the kill"
    assert run.forgotten, "slots that ran are unknown to the promoted replica"

"""A django-celery-beat row is sent as django-celery-beat's own ``DatabaseScheduler``
sends it: the same headers, properties, delivery info and body, only with what
``-S singleton`` adds on purpose (the slot's task id and its slot, entry and replica
headers).

Both schedulers run as real ``celery beat`` processes of ``tests.djangoapp.dcb_app`` on
this test's PostgreSQL database, each publishing to its own database of one Redis broker
where no worker consumes; the test reads the raw messages kombu stored there.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from typing import Any

import pytest
import redis
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from celery_singleton_beat.core.schema import Header
from celery_singleton_beat.core.slots import slot_task_id
from celery_singleton_beat.testing import RedisServer, wait_for
from tests.support.clusters import BeatCluster, slot_ms

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]

EXPIRES = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
#: The broker database each scheduler publishes to.
SINGLETON, DATABASE_SCHEDULER = 1, 2


def messages(broker: RedisServer, db: int) -> list[dict[str, Any]]:
    """The raw messages kombu stored in queue ``compared`` (a list per priority step)."""
    client = redis.Redis(host="127.0.0.1", port=broker.port, db=db)
    found = []
    for key in sorted(client.keys("compared*")):
        if client.type(key) == b"list":
            found += [json.loads(raw) for raw in client.lrange(key, 0, -1)]
    return found


def first_message(cluster: BeatCluster, db: int, scheduler: str) -> dict[str, Any]:
    assert cluster.broker is not None
    broker = cluster.broker
    replica = cluster.start_replica(
        f"beat-{db}", scheduler=scheduler, TEST_BROKER_URL=f"redis://127.0.0.1:{broker.port}/{db}"
    )
    wait_for(lambda: messages(broker, db), 30, f"a message from {scheduler}\n{replica.text()}")
    cluster.kill(replica)
    return messages(broker, db)[0]


def test_a_row_is_sent_as_django_celery_beat_sends_it_plus_the_slot_headers(
    cluster: BeatCluster,
) -> None:
    every = IntervalSchedule.objects.using("postgres").create(
        every=1, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.using("postgres").create(
        name="compared", task="record", interval=every, args=json.dumps(["compared"]),
        kwargs=json.dumps({}), queue="compared", exchange="compared", routing_key="compared",
        priority=5, headers=json.dumps({"trace": "abc"}), expires=EXPIRES,
    )  # fmt: skip
    theirs = first_message(
        cluster, DATABASE_SCHEDULER, "django_celery_beat.schedulers:DatabaseScheduler"
    )
    ours = first_message(cluster, SINGLETON, "singleton")
    replica = cluster.replica_id(next(p for p in cluster.processes if p.name == "beat-1"))

    added = {
        h.value: ours["headers"].pop(h.value) for h in (Header.SLOT, Header.ENTRY, Header.REPLICA)
    }
    slot = added[Header.SLOT.value]
    assert added == {Header.SLOT.value: slot, Header.ENTRY.value: "compared",
                     Header.REPLICA.value: replica}  # fmt: skip
    task_id = slot_task_id("compared", slot_ms(slot))
    assert (ours["headers"]["id"], ours["headers"]["root_id"]) == (task_id, task_id)
    assert ours["properties"]["correlation_id"] == task_id
    for message in (ours, theirs):  # what differs between any two publishes of one task
        headers, properties = message["headers"], message["properties"]
        assert headers.pop("id") == headers.pop("root_id") == properties.pop("correlation_id")
        assert re.fullmatch(rf"gen\d+@{re.escape(socket.gethostname())}", headers.pop("origin"))
        assert properties.pop("reply_to") and properties.pop("delivery_tag")
        left = int(properties.pop("expiration")) / 1000  # until expires, from the publish
        assert 0 <= left - (EXPIRES - dt.datetime.now(dt.timezone.utc)).total_seconds() < 60
    assert ours == theirs
    assert theirs["headers"]["periodic_task_name"] == "compared"
    assert theirs["headers"]["trace"] == "abc"
    assert theirs["headers"]["expires"] == EXPIRES.isoformat()
    assert theirs["properties"]["delivery_info"] == {"exchange": "compared",
                                                     "routing_key": "compared"}  # fmt: skip
    assert theirs["properties"]["priority"] == 5

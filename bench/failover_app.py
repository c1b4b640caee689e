"""The Celery app of ``bench/failover.py``: beat replicas (ours or RedBeat) on a
Sentinel-managed primary, and a worker that records every execution.

Configured from the environment: ``BENCH_BROKER`` (the broker, a Redis of its own),
``BENCH_SCHEDULER`` (``singleton`` or ``redbeat``), ``BENCH_SENTINELS`` (``host:port``,
comma-separated) and ``BENCH_MASTER_NAME``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

SCHEDULE = {"two": 2.0, "three": 3.0}

app = Celery("failover_bench", broker=os.environ.get("BENCH_BROKER", "memory://"))
app.conf.update(
    task_default_queue="failover-bench",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        name: {"task": "record", "schedule": every, "args": (name,)}
        for name, every in SCHEDULE.items()
    },
)
_sentinels = [
    (host, int(port))
    for host, port in (
        s.rsplit(":", 1) for s in os.environ.get("BENCH_SENTINELS", "").split(",") if s
    )
]
_name = os.environ.get("BENCH_MASTER_NAME", "mymaster")
if os.environ.get("BENCH_SCHEDULER") == "redbeat":
    # RedBeat's documented Sentinel settings: a redis-sentinel:// URL with the Sentinels
    # and the service name in redbeat_redis_options; its lock kept a lease as short as ours
    app.conf.update(
        beat_scheduler="redbeat.RedBeatScheduler",
        redbeat_redis_url="redis-sentinel://",
        redbeat_redis_options={
            "sentinels": _sentinels,
            "service_name": _name,
            "socket_timeout": 0.5,
        },
        redbeat_lock_timeout=3,
        beat_max_loop_interval=1,
    )
else:
    app.conf.update(
        beat_scheduler="celery_singleton_beat.Scheduler",
        singleton_beat_redis_urls=";".join(f"sentinel://{h}:{p}" for h, p in _sentinels) + "/0",
        singleton_beat_redis_transport_options={"master_name": _name},
    )


@app.task(bind=True, name="record")
def record(self: Any, entry: str) -> None:
    row = {"entry": entry, "task_id": self.request.id, "at": time.time()}
    redis.Redis.from_url(os.environ["BENCH_BROKER"]).rpush("executions", json.dumps(row))

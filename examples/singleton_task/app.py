"""Singleton tasks: one execution at a time per key, a second copy skipped and recorded.

    celery -A app worker --concurrency 4
    python -c "import app; [app.sync_account.delay(42) for _ in range(5)]"

Five copies arrive together; one runs, four are skipped (each skip is logged and emitted
as a ``RunSkipped`` event). ``sync_account(7)`` has another key and runs beside it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from celery_singleton_beat import SingletonTask, events

app = Celery("singleton_example", broker=os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    singleton_beat_redis_urls=os.environ.get(
        "SINGLETON_BEAT_REDIS_URLS",
        "redis://127.0.0.1:7001/0,redis://127.0.0.1:7002/0,redis://127.0.0.1:7003/0",
    ),
    worker_hijack_root_logger=False,
)


@app.task(bind=True, base=SingletonTask, singleton_key="sync:{account_id}", singleton_ttl=30)
def sync_account(self: Any, account_id: int, full: bool = False) -> str:
    """Pretend to sync an account; the lease's fencing token guards the writes."""
    lease = self.singleton
    print(f"syncing account {account_id} with fence {lease.fence}", flush=True)
    time.sleep(1.0)
    return f"account {account_id} synced (fence {lease.fence})"


def _print_skips(event: events.Event) -> None:
    if isinstance(event, events.RunSkipped):
        print(f"skipped {event.key}: {event.reason}, held by {event.holder}", flush=True)


events.subscribe(_print_skips)

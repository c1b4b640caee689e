"""The application's tasks: one sync per account at a time, a nightly report and a weekly
digest."""

import time
from typing import Any

from celery import shared_task

from celery_singleton_beat import SingletonTask, SlotAwareTask

SYNCED: list[tuple[int, int]] = []
"""(account, fencing token) of every sync that ran, in this process (for the tests)."""
DIGESTS: list[str] = []
"""The task id of every weekly digest that ran, in this process (for the tests)."""


@shared_task(bind=True, base=SingletonTask, singleton_key="sync:{account_id}")
def sync_account(self: Any, account_id: int, seconds: float = 0.0) -> str:
    """Sync one account with the bank; two syncs of one account must never overlap."""
    time.sleep(seconds)
    SYNCED.append((account_id, self.singleton.fence))
    return f"synced {account_id} as {self.request.id}"


@shared_task(bind=True, base=SlotAwareTask)
def nightly_report(self: Any) -> str:
    """Beat sends it once a night; a slot re-sent by another replica runs once."""
    return f"report {self.request.id}"


@shared_task(bind=True)
def weekly_digest(self: Any) -> str:
    """A plain task: a worker still runs a slot that beat sends twice once."""
    DIGESTS.append(self.request.id)
    return f"digest {self.request.id}"

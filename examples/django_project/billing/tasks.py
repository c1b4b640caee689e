"""Tasks of the demo: a singleton charge run, a ledger sync that sometimes retries, a report."""

import os
import random
import time

from celery import shared_task

from celery_singleton_beat import SingletonTask

RETRY_RATE = float(os.environ.get("DEMO_LEDGER_RETRY_RATE", "0.3"))


@shared_task(base=SingletonTask, name="billing.charge_cards", singleton_ttl=30)
def charge_cards() -> str:
    """Must never run twice at once: one charge run per slot, whatever the replicas do."""
    time.sleep(random.uniform(0.2, 1.5))
    return "charged"


@shared_task(
    base=SingletonTask, name="billing.sync_ledger", bind=True, max_retries=2, singleton_ttl=20
)
def sync_ledger(self) -> int:
    """Fails now and then; each retry is a new attempt with its own row."""
    time.sleep(random.uniform(0.1, 0.8))
    if self.request.retries == 0 and random.random() < RETRY_RATE:
        raise self.retry(countdown=1, exc=RuntimeError("ledger busy"))
    return random.randint(1, 100)


@shared_task(name="billing.nightly_report")
def nightly_report() -> str:
    return "report sent"


@shared_task(base=SingletonTask, name="billing.reconcile_account", singleton_key="{account_id}")
def reconcile_account(account_id: int, seconds: float = 2.0) -> int:
    """One reconciliation per account at a time; a second request meanwhile is skipped."""
    time.sleep(seconds)
    return account_id


@shared_task(name="billing.send_reminders")
def send_reminders(days_overdue: int = 7) -> str:
    """Scheduled from django-celery-beat's tables: its interval and arguments are edited in
    the admin (Periodic tasks), and every beat replica follows within two seconds."""
    return f"reminded accounts {days_overdue} days overdue"

"""Celery beat on every replica: the :class:`~.scheduler.Scheduler` adapter over Celery's
override points, and what it dispatches, leads, sends and serves with."""

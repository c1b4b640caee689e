"""The worker side: :class:`~.singleton.SingletonTask` and :class:`~.singleton.SlotAwareTask`,
the run states the overlap policy reads, and (:mod:`.copies`) a second copy of a beat slot
dropped for every task, connected to Celery's worker start-up when this package is imported."""

from celery_singleton_beat.tasks import copies

copies.connect()

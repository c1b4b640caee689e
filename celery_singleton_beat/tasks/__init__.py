"""The worker side: :class:`~.singleton.SingletonTask`, :class:`~.singleton.SlotAwareTask`,
the run states the overlap policy reads, and the drop of a beat slot's second copy.

The drop (:mod:`.copies`) is connected to Celery's worker start-up when this package is
imported, for every task."""

from celery_singleton_beat.tasks import copies

copies.connect()

"""The worker side: :class:`~.singleton.SingletonTask` and :class:`~.singleton.SlotAwareTask`,
and the run states the overlap policy reads."""

"""Who evaluates the schedule: every replica in ``active`` mode; in ``leader`` mode only the
holder of a lease on the slot store's lock, which a watchdog extends.

A leader that loses its lease (a pause, a partition) steps down to standby and keeps
running; the slot fences still apply, so a leader paused past its lease cannot publish
twice::

    replica A: leader ── (SIGSTOP past the lease) ── resumes: lease lost, steps down
    replica B: standby ... election: lease ── leader, reloads every entry's progress
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery_singleton_beat.core.schema import LEADER_LOCK, Mode, Role
from celery_singleton_beat.locks import Lease, LockBackend, Watchdog
from celery_singleton_beat.observe import events
from celery_singleton_beat.settings.config import Config

logger = logging.getLogger(__name__)


class Leadership:
    """One replica's part in the election; ``on_elected`` is called when it becomes leader
    (a standby's view of the schedule is stale)."""

    def __init__(
        self, config: Config, lock: LockBackend, replica: str, on_elected: Callable[[], object]
    ) -> None:
        self.config = config
        self.lock = lock
        self.replica = replica
        self.on_elected = on_elected
        self.role = Role.ACTIVE if config.mode == Mode.ACTIVE else Role.STANDBY
        self._lease: Lease | None = None
        self._watchdog: Watchdog | None = None
        self._next_election = 0.0

    @property
    def next_election(self) -> float:
        """When (monotonic seconds) a standby tries for the lease next."""
        return self._next_election

    def lead(self, monotonic: float) -> bool:
        """Whether this replica evaluates the schedule now (always, in active mode)."""
        if self.config.mode == Mode.ACTIVE:
            return True
        lease = self._lease
        if lease is not None:
            if not lease.lost and lease.remaining() > 0:
                return True
            self.step_down("its lease expired or could not be extended")
        if monotonic < self._next_election:
            return False
        self._next_election = monotonic + min(0.5, self.config.lease_ttl / 3)
        lease = self.lock.acquire(LEADER_LOCK, ttl=self.config.lease_ttl)
        if lease is None:
            return False
        self._lease = lease
        self._watchdog = Watchdog(self.lock, lease).start()
        self.role = Role.LEADER
        self.on_elected()
        logger.info("singleton beat: %s is the leader now (fence %d)", self.replica, lease.fence)
        events.emit(events.LeaderChanged(replica=self.replica, leader=True, reason="elected"))
        return True

    def may_publish(self) -> bool:
        """Whether a slot may be published now: in leader mode, only while the lease holds."""
        if self.config.mode != Mode.LEADER:
            return True
        return self._lease is not None and self._lease.remaining() > 0

    def step_down(self, reason: str, release: bool = False) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        lease, self._lease = self._lease, None
        if lease is None:
            return
        if release and lease.remaining() > 0:
            try:
                self.lock.release(lease)
            except Exception:
                logger.warning("singleton beat: could not release the leader lease", exc_info=True)
        self.role = Role.STANDBY
        logger.warning("singleton beat: %s steps down to standby: %s", self.replica, reason)
        events.emit(events.LeaderChanged(replica=self.replica, leader=False, reason=reason))

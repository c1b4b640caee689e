"""Claims kept alive while their slots are being published.

A broker that answers slowly must not let a claim expire under a message in flight: the
claim's expiry is what lets another replica take a slot over and send it again::

    replica A: claim t (ttl 3 s) ── publish ............ (broker answers after 4 s) ── done
    replica B:                      claim t: held ... held ... held ...          ── done

Without the keeper, A's claim would expire at 3 s and B would send ``t`` a second time.
At the publish timeout the keeper cuts the broker connection, so the publish fails at
once rather than completing later on claims that have expired; the slots are given back
and sent again, with the same task ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery_singleton_beat.settings.config import Config
    from celery_singleton_beat.stores.base import Fences

logger = logging.getLogger(__name__)


class ClaimKeeper:
    """Extends a chunk's claims every third of the claim TTL, from a thread, until the
    block it guards ends or the publish timeout passes."""

    def __init__(
        self,
        store: Fences,
        token: str,
        config: Config,
        fences: Sequence[tuple[str, int]],
        abort: Callable[[], object] = lambda: None,
    ) -> None:
        self.store = store
        self.token = token
        self.ttl = config.claim_ttl
        self.retention = config.fence_retention
        self.fences = list(fences)
        self.deadline_s = config.publish_timeout
        self.deadline = time.monotonic() + config.publish_timeout
        self.lost = False
        self.abort = abort
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ClaimKeeper:
        if self.fences:
            self._thread = threading.Thread(
                target=self._run, name="singleton-beat-claims", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def expired(self) -> bool:
        """Whether the publish timeout has passed (the claims are no longer kept)."""
        return self.lost or time.monotonic() >= self.deadline

    def _run(self) -> None:
        while not self._stop.wait(min(self.ttl / 3, max(0.0, self.deadline - time.monotonic()))):
            if time.monotonic() >= self.deadline:
                logger.error(
                    "singleton beat: the broker did not take %d message(s) within the "
                    "publish timeout (%ss); cutting the connection",
                    len(self.fences),
                    self.deadline_s,
                )
                self.abort()
                return
            try:
                held = self.store.extend(self.fences, self.token, self.ttl, self.retention)
            except Exception:
                logger.warning("singleton beat: could not extend slot claims", exc_info=True)
                continue
            if not all(held):
                self.lost = True
                logger.warning(
                    "singleton beat: %d of %d slot claim(s) could not be extended while "
                    "publishing; another replica may send them again with the same task id",
                    held.count(False),
                    len(held),
                )
                return

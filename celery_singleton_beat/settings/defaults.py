"""Every default, stated once: the settings, ``Redlock`` and the stores take theirs from here.

``docs/configuration.md`` documents each (``tests/test_docs.py`` checks the page against
the settings' defaults).
"""

from __future__ import annotations

from typing import Final

from celery_singleton_beat.core.schema import DEFAULT_PREFIX, Mode, StoreKind

KEY_PREFIX: Final = DEFAULT_PREFIX
MODE: Final = Mode.ACTIVE.value
STORE: Final = StoreKind.REDIS.value
DATABASE: Final = "default"
"""The Django database alias of the database slot store."""
LEASE_TTL: Final = 10.0
CLAIM_TTL: Final = 3.0
PUBLISH_TIMEOUT: Final = 10.0
SHARE_GRACE: Final = 0.0
"""Seconds a slot of an entry another live replica owns waits before this one claims it
(``singleton_beat_share_grace``); 0, the default: no share-out, every replica claims every
slot when it falls due (a replica's death delays no slot by a grace)."""
MISFIRE_GRACE: Final = 300.0
NODE_TIMEOUT: Final = 0.05
"""Seconds one Redis master may take to answer."""
ETCD_TIMEOUT: Final = 0.5
"""Seconds one etcd member may take to answer (a write: agreed by a majority, on disk)."""
MIN_REPLICAS: Final = "auto"
"""Replicas that must acknowledge a write on a Redis primary before it counts: ``"auto"``,
as many as the primary reports when first connected to (per primary, never lowered)."""
SLOT_RETENTION: Final = 86400.0
"""How long a slot's fence (and a slot's "ran" mark) is kept: ``singleton_beat_fence_retention``."""
LOCK_FENCE_RETENTION: Final = 30 * 86400.0
"""How long a task lock's fencing counter is kept after its last grant: longer than the
longest gap between two runs of one key, so that fences never restart at 1
(``singleton_beat_task_fence_retention``, ``Redlock(fence_retention=…)``)."""
HEARTBEAT_TTL: Final = 5.0
"""How long a beat replica's heartbeat lives; replicas write one every second or so."""
TASK_TTL: Final = 60.0
TASK_RETRY_COUNTDOWN: Final = 5.0
RETRY_DELAY: Final = 0.05
"""Seconds between two tries of a lock that waits."""

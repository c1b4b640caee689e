"""Every shared name, defined once: store keys, message headers and the enumerations.

Replicas, workers, the CLI and the dashboard of one deployment read each other's keys and
headers, so a name spelled twice is a name that can drift. Nothing outside this module
builds a key string or spells a header name (``tests/test_schema.py`` greps for it).

Keys, under the configured prefix (``singleton-beat:`` by default):

=================================  =========================================================
``lock:{name}``                    a lock held on a majority of masters (Redlock)
``fence:{name}``                   that lock's fencing counter
``lock:leader``                    the beat leader's lease (``leader`` mode)
``lock:ran:{entry}:{slot}``        a slot that ran (held by the worker that ran it)
``lock:enqueue:{task key}``        a message queued for a task key (``singleton_enqueue``)
``entry:{name}``                   an entry's progress: ``last``, ``dispatched``, ``skipped``
``anchor:{name}:{every_ms}``       the anchor of an interval entry's slots
``fire:{name}:{slot}``             one slot's fence: ``{token}|{expiry_ms}``, then ``done:…``
``replica:{host}:{pid}``           a beat replica's heartbeat (JSON, with a TTL)
``replicas``                       live replicas, scored by heartbeat time (master's clock)
``runstate:{entry}``               an entry's run state for its overlap policy
``schedule:doc``                   the runtime schedule (JSON: entries, runs, paused)
``schedule:rev``                   its revision, which replicas poll
``schedule:ran:{run id}``          a run-now request that was sent
``lock:schedule-edit``             the lock editors of the runtime schedule take in turn
=================================  =========================================================
"""

from __future__ import annotations

import enum
from typing import Final

DEFAULT_PREFIX: Final = "singleton-beat:"


class StrEnum(str, enum.Enum):
    """A string enumeration whose members compare and format as their value (Python 3.10
    has no ``enum.StrEnum``)."""

    def __str__(self) -> str:
        return str(self.value)

    def __hash__(self) -> int:
        # Enum hashes a member by its name; hash it as its value, so that it finds the
        # same dict entries and set members as the plain string does
        return str.__hash__(self)


# -- enumerations ---------------------------------------------------------------------


class Mode(StrEnum):
    """How replicas share the schedule (``singleton_beat_mode``)."""

    ACTIVE = "active"
    """Every replica evaluates the schedule; the slot fences pick one sender."""
    LEADER = "leader"
    """Only the holder of the leader lease evaluates it."""


class Role(StrEnum):
    """What a replica does right now."""

    ACTIVE = "active"
    LEADER = "leader"
    STANDBY = "standby"


class ClaimStatus(StrEnum):
    """What a store said about one slot's fence when a replica tried to claim it."""

    CLAIMED = "claimed"
    """This replica holds the claim: it decides the slot."""
    HELD = "held"
    """Another replica holds a live claim (or the vote was split): look again later."""
    DONE = "done"
    """The slot was decided already."""


class Outcome(StrEnum):
    """How a slot was decided (stored on its fence and in ``SlotDispatch.outcome``)."""

    DISPATCHED = "dispatched"
    SKIPPED_MISFIRE = "skipped_misfire"
    PUBLISH_FAILED = "publish_failed"
    SKIPPED_OVERLAP = "skipped_overlap"
    """Held back: the previous slot's run had not finished (``overlap``)."""


class SkipReason(StrEnum):
    """Why a slot, or a copy of a task message, did not run (``SlotSkipped.reason``,
    ``TaskSkipped.reason``)."""

    MISFIRE = "misfire"
    PUBLISH_FAILED = "publish_failed"
    OVERLAP = "overlap"
    RAN_WITHOUT_LOCK = "ran_without_lock"
    SKIPPED_DUPLICATE = "skipped_duplicate"
    SKIPPED_LOCK_ERROR = "skipped_lock_error"


class Misfire(StrEnum):
    """An entry's misfire policy."""

    COALESCE = "coalesce"
    SKIP = "skip"


class Overlap(StrEnum):
    """An entry's overlap policy: whether a slot is sent while the previous run is not done."""

    ALLOW = "allow"
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"


class RunStatus(StrEnum):
    """One attempt of a task, as the Django app records it (``TaskRun.status``)."""

    STARTED = "started"
    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"
    SKIPPED_DUPLICATE = "skipped_duplicate"
    SKIPPED_LOCK_ERROR = "skipped_lock_error"
    LOCK_LOST = "lock_lost"
    REVOKED = "revoked"


class StoreKind(StrEnum):
    """The built-in slot stores (``singleton_beat_store``)."""

    REDIS = "redis"
    DATABASE = "database"
    SQLALCHEMY = "sqlalchemy"


# -- message headers --------------------------------------------------------------------


class Header(StrEnum):
    """Headers of the messages beat and singleton tasks send."""

    BEAT_TASK = "celery_beat_task"
    """Celery's own mark on a message sent by beat."""
    SLOT = "singleton_beat_slot"
    ENTRY = "singleton_beat_entry"
    REPLICA = "singleton_beat_replica"
    LOCK_TOKEN = "singleton_beat_lock_token"
    ENQUEUE_TOKEN = "singleton_beat_enqueue_token"
    SLOT_UNCHECKED = "singleton_beat_slot_unchecked"
    TRACK_RUN = "singleton_beat_track_run"
    """Set on a slot of an entry with an overlap policy: its worker records the run's state."""


# -- keys -------------------------------------------------------------------------------

LEADER_LOCK: Final = "leader"
"""The lock name of the beat leader's lease."""
SCHEDULE_EDIT_LOCK: Final = "schedule-edit"
"""The lock name editors of the runtime schedule take in turn."""
RUN_STATE_FIELDS: Final = ("queued", "started", "finished", "overlapped")
"""An entry's run state (overlap policy): newest slot queued, started, finished; count held back."""


RAN_PREFIX: Final = "ran:"
ENQUEUE_PREFIX: Final = "enqueue:"


def ran_lock(entry: str, slot: str) -> str:
    """The lock name marking that ``entry``'s slot (as labelled in its header) ran."""
    return f"{RAN_PREFIX}{entry}:{slot}"


def enqueue_lock(task_key: str) -> str:
    """The lock name of a queued message for a singleton task key."""
    return f"{ENQUEUE_PREFIX}{task_key}"


#: ``locks --kind`` names and the kind each lock is shown with, in listing order.
LOCK_KINDS: Final = {
    "leader": "beat leader",
    "task": "task",
    "enqueue": "enqueue",
    "ran": "slot ran",
}


def lock_kind(name: str) -> str:
    """What a lock name is for: beat leader, task, enqueue or slot ran."""
    if name == LEADER_LOCK:
        return LOCK_KINDS["leader"]
    if name.startswith(RAN_PREFIX):
        return LOCK_KINDS["ran"]
    if name.startswith(ENQUEUE_PREFIX):
        return LOCK_KINDS["enqueue"]
    return LOCK_KINDS["task"]


class Keys:
    """The full key of every shared record under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Keys({self.prefix!r})"

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def fence(self, name: str) -> str:
        return f"{self.prefix}fence:{name}"

    def entry(self, name: str) -> str:
        return f"{self.prefix}entry:{name}"

    def anchor(self, name: str, every_ms: int) -> str:
        return f"{self.prefix}anchor:{name}:{every_ms}"

    def slot(self, name: str, slot: int) -> str:
        """The fence of one slot of an entry."""
        return f"{self.prefix}fire:{name}:{slot}"

    def replica(self, replica: str) -> str:
        return f"{self.prefix}replica:{replica}"

    def run_state(self, entry: str) -> str:
        """An entry's run state (``RUN_STATE_FIELDS``), for its overlap policy."""
        return f"{self.prefix}runstate:{entry}"

    @property
    def schedule_doc(self) -> str:
        """The runtime schedule document (JSON)."""
        return f"{self.prefix}schedule:doc"

    @property
    def schedule_rev(self) -> str:
        """The runtime schedule's revision, the version replicas poll."""
        return f"{self.prefix}schedule:rev"

    def run_sent(self, run_id: str) -> str:
        """That a run-now request was sent."""
        return f"{self.prefix}schedule:ran:{run_id}"

    @property
    def replicas(self) -> str:
        return f"{self.prefix}replicas"

    # patterns and prefixes for readers that scan

    @property
    def all_locks(self) -> str:
        return self.lock("*")

    @property
    def lock_prefix(self) -> str:
        return self.lock("")

    @property
    def all_replicas(self) -> str:
        return self.replica("*")

    @property
    def replica_prefix(self) -> str:
        return self.replica("")

    @property
    def entry_prefix(self) -> str:
        return self.entry("")

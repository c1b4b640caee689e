"""Every shared name, defined once: store keys, message headers and the enumerations.

Replicas, workers, the CLI and the dashboard of one deployment read each other's keys and
headers, so a name spelled twice is a name that can drift. Nothing outside this module
builds a key string or spells a header name (``tests/test_schema.py`` greps for it).

Keys, under the configured prefix (``singleton-beat:`` by default), as standalone masters
and Sentinel-managed primaries hold them, and as a Redis Cluster holds them:

============================  ==================================  ==========================
standalone and Sentinel       Redis Cluster                       what
============================  ==================================  ==========================
``lock:{name}``               ``lock:{{name}}``                   a lock held on a majority
                                                                  of masters (Redlock)
``fence:{name}``              ``fence:{{name}}``                  that lock's fencing
                                                                  counter
``lock:leader``               ``lock:{{leader}}``                 the beat leader's lease
``lock:ran:{entry}:{slot}``   ``lock:ran:{{entry}}:{slot}``       a slot that ran (held by
                                                                  the worker that ran it)
``lock:enqueue:{task key}``   ``lock:{{enqueue:{task key}}}``     a message queued for a
                                                                  task key
                                                                  (``singleton_enqueue``)
``entry:{name}``              ``entry:{{name}}``                  an entry's progress:
                                                                  ``last``, ``dispatched``,
                                                                  ``skipped``
``anchor:{name}:{every_ms}``  ``anchor:{{name}}:{every_ms}``      the anchor of an interval
                                                                  entry's slots
``fire:{name}:{slot}``        ``fire:{{name}}:{slot}``            one slot's fence:
                                                                  ``{token}|{expiry_ms}``,
                                                                  then ``done:…``
``runstate:{entry}``          ``runstate:{{entry}}``              an entry's run state for
                                                                  its overlap policy
``replica:{host}:{pid}``      ``{{beat}}:replica:{host}:{pid}``   a beat replica's heartbeat
                                                                  (JSON, with a TTL)
``replicas``                  ``{{beat}}:replicas``               live replicas, scored by
                                                                  heartbeat time (master's
                                                                  clock)
``sharing``                   ``{{beat}}:sharing``                the live replicas that take
                                                                  a share of the entries,
                                                                  scored as ``replicas``
``schedule:doc``              ``{{beat}}:schedule:doc``           the runtime schedule
                                                                  (JSON: entries, runs,
                                                                  paused)
``schedule:rev``              ``{{beat}}:schedule:rev``           its revision, which
                                                                  replicas poll
``schedule:ran:{run id}``     ``{{beat}}:schedule:ran:{run id}``  a run-now request that was
                                                                  sent
``lock:schedule-edit``        ``lock:{{schedule-edit}}``          the lock editors of the
                                                                  runtime schedule take in
                                                                  turn
============================  ==================================  ==========================

**Hash tags, on a Redis Cluster only.** A cluster keeps each key in the hash slot of its
*hash tag* (the text between the first ``{`` and the next ``}``), and a script or a
transaction may only touch keys of one slot. On a cluster every key carries a tag in
literal braces (doubled above; a single pair is a placeholder): an entry's keys and its
slots' keys, the ``ran`` marks of its slots included, carry the entry's name; a lock and
its fencing counter carry the lock's name; and the keys every replica shares
(heartbeats, the replica set, the runtime schedule) carry ``{beat}``. So the claim
script (a slot's fence and its entry's progress), the acquire script (a lock and its
counter) and the heartbeat script (a replica's key, the replica set, the schedule's
revision) each touch one slot. A name that begins with ``}`` or ``|``, or is empty, is
tagged with ``|`` in front (a tag must not be empty), and the prefix may hold no brace.

Standalone masters and Sentinel keep the names without tags: 0.1.0 wrote them so, and
a rolling upgrade runs old and new replicas and workers side by side. Were the names to
change, an old and a new process would hold the same lock or fence under two keys, and
both would win it (a slot sent twice, a fencing counter starting again at 1). A cluster
could not be used before, so its names start tagged, with nothing to migrate. The cost:
one deployment cannot move between standalone masters and a cluster by changing its URL
alone while replicas of both kinds run; stop every replica, then start them on the new
store (progress and fences start afresh there, as on any new store).
"""

from __future__ import annotations

import enum
import re
from typing import Final

from celery_singleton_beat.errors import ConfigurationError

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
    ZOOKEEPER = "zookeeper"
    ETCD = "etcd"


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
    PAUSE_ON_FAILURE = "singleton_beat_pause_on_failure"
    """Set on a slot of an entry with ``pause_on_failure``: after how many consecutive
    failed runs the worker that sees the last of them pauses the entry."""


PAUSED_ON_FAILURE: Final = "pause_on_failure"
"""Who paused an entry that its ``pause_on_failure`` policy paused (the pause's ``by``)."""
PAUSED_BY_HAND: Final = "hand"
"""An entry paused through the API, the CLI or the admin, whatever ``by`` the pause names."""
PAUSED_IN_SETTINGS: Final = "settings"
"""An entry paused by ``"paused": True`` in its settings."""
PAUSE_KINDS: Final = (PAUSED_ON_FAILURE, PAUSED_BY_HAND, PAUSED_IN_SETTINGS)
"""Who holds an entry paused, as events and metrics name it."""


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


#: A beat slot's label as beat writes it in the message header: ``2026-11-24T23:00:00.000Z``.
_SLOT_LABEL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
#: The hash tag of the keys every replica shares, on a Redis Cluster.
SHARED_TAG: Final = "{beat}"


class Keys:
    """The full key of every shared record under one prefix.

    With ``hash_tags`` (on a Redis Cluster) each key carries the hash tag that puts it in
    the same hash slot as the keys it is read and written with (see the module's table).
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, hash_tags: bool = False) -> None:
        if hash_tags and isinstance(prefix, str) and ("{" in prefix or "}" in prefix):
            raise ConfigurationError(
                "singleton_beat_key_prefix",
                prefix,
                "a prefix with no { or } on a Redis Cluster: each key carries its own hash "
                "tag, such as singleton-beat:entry:{nightly}, and a brace in the prefix would "
                "take its place",
            )
        self.prefix = prefix
        self.hash_tags = hash_tags
        self._shared = f"{prefix}{SHARED_TAG}:" if hash_tags else prefix

    def __repr__(self) -> str:
        tags = ", hash_tags=True" if self.hash_tags else ""
        return f"Keys({self.prefix!r}{tags})"

    def _tag(self, name: str) -> str:
        """``name`` as the hash tag of its keys (on a cluster), else as it is."""
        if not self.hash_tags:
            return name
        if name[:1] in ("", "}", "|"):  # a tag may not be empty: escape with "|"
            return f"{{|{name}}}"
        return f"{{{name}}}"

    def _lock_tag(self, name: str) -> str:
        """A lock name as its keys carry it: a slot's ``ran`` mark tagged with its entry."""
        if self.hash_tags and name.startswith(RAN_PREFIX) and _ends_with_label(name):
            entry, label = name[len(RAN_PREFIX) : -25], name[-24:]
            return f"{RAN_PREFIX}{self._tag(entry)}:{label}"
        return self._tag(name)

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{self._lock_tag(name)}"

    def fence(self, name: str) -> str:
        return f"{self.prefix}fence:{self._lock_tag(name)}"

    def lock_name(self, key: str) -> str:
        """The lock name that :meth:`lock` made ``key`` of."""
        rest = key[len(self.prefix) + len("lock:") :]
        if not self.hash_tags:
            return rest
        if rest.startswith(RAN_PREFIX + "{"):
            tagged, _, label = rest[len(RAN_PREFIX) :].rpartition("}:")
            return f"{RAN_PREFIX}{_untag(tagged + '}')}:{label}"
        return _untag(rest)

    def entry(self, name: str) -> str:
        return f"{self.prefix}entry:{self._tag(name)}"

    def anchor(self, name: str, every_ms: int) -> str:
        return f"{self.prefix}anchor:{self._tag(name)}:{every_ms}"

    def slot(self, name: str, slot: int) -> str:
        """The fence of one slot of an entry."""
        return f"{self.prefix}fire:{self._tag(name)}:{slot}"

    def slot_claim(self, name: str, slot: int) -> str:
        """A slot's live claim, on a store whose keys expire as a whole (etcd's leases):
        the fence keeps the claimant, this key lives only as long as the claim."""
        return f"{self.prefix}fire:{self._tag(name)}:{slot}:claim"

    def slot_done(self, name: str, slot: int) -> str:
        """A decided slot's outcome, on a store whose keys expire as a whole (etcd)."""
        return f"{self.prefix}fire:{self._tag(name)}:{slot}:done"

    def replica(self, replica: str) -> str:
        return f"{self._shared}replica:{replica}"

    def replica_name(self, key: str) -> str:
        """The replica id (``host:pid``) that :meth:`replica` made ``key`` of."""
        return key[len(self.replica_prefix) :]

    def run_state(self, entry: str) -> str:
        """An entry's run state (``RUN_STATE_FIELDS``), for its overlap policy."""
        return f"{self.prefix}runstate:{self._tag(entry)}"

    @property
    def schedule_doc(self) -> str:
        """The runtime schedule document (JSON)."""
        return f"{self._shared}schedule:doc"

    @property
    def schedule_rev(self) -> str:
        """The runtime schedule's revision, the version replicas poll."""
        return f"{self._shared}schedule:rev"

    def run_sent(self, run_id: str) -> str:
        """That a run-now request was sent."""
        return f"{self._shared}schedule:ran:{run_id}"

    @property
    def replicas(self) -> str:
        return f"{self._shared}replicas"

    @property
    def sharing(self) -> str:
        """The live replicas that take a share of the entries (see ``core/share.py``)."""
        return f"{self._shared}sharing"

    # patterns and prefixes for readers that scan

    @property
    def all_locks(self) -> str:
        return f"{self.prefix}lock:*"

    def all_slots(self, name: str) -> str:
        """The fences of every slot of an entry (a ``SCAN`` pattern; ``name`` as written)."""
        return f"{self.prefix}fire:{self._tag(name)}:*"

    @property
    def all_replicas(self) -> str:
        return f"{self.replica_prefix}*"

    @property
    def replica_prefix(self) -> str:
        return f"{self._shared}replica:"

    @property
    def entry_prefix(self) -> str:
        return f"{self.prefix}entry:"


def _ends_with_label(name: str) -> bool:
    """Whether a ``ran`` mark's name ends with ``:`` and a slot label as beat writes it."""
    return (
        len(name) >= len(RAN_PREFIX) + 25
        and name[-25] == ":"
        and _SLOT_LABEL.fullmatch(name[-24:]) is not None
    )


def _untag(tagged: str) -> str:
    """The name inside a hash tag made by ``Keys._tag``."""
    inner = tagged[1:-1]
    return inner[1:] if inner.startswith("|") else inner

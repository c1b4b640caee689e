"""Where runtime schedule entries are kept: one JSON document on the Redis masters.

Every storage call of the runtime schedule goes through :class:`RuntimeStore`, so that it
can move behind the state-store contract without touching its callers. Keys (under the
configured prefix):

- ``schedule:doc`` — ``{"entries": {name: spec}, "runs": {run id: run}, "paused": {name:
  who and when}}`` as JSON;
- ``schedule:rev`` — the document's revision, the version replicas poll (one ``GET``).

An edit takes the ``schedule-edit`` Redlock, reads the newest revision a majority has,
changes it and writes revision + 1 to every master ("set if newer"): two editors never
lose each other's change, and a master that missed an edit (down, restarted empty) is
outvoted on read and brought up to date by the next edit::

    editor A: lock ── read rev 7 ── write rev 8 (add "report") ── unlock
    editor B:   lock (waits) ........................ read rev 8 ── write rev 9 (pause)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from celery_singleton_beat.config import Config
from celery_singleton_beat.errors import LockHeld, QuorumUnavailable
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.locks.nodes import Masters, describe

T = TypeVar("T")
#: How long an edit may hold the edit lock, and wait for it (s).
EDIT_TTL = 5.0
EDIT_WAIT = 5.0


class RuntimeStore:
    """The runtime schedule document on the masters."""

    # KEYS[1] doc, KEYS[2] rev; ARGV[1] rev, ARGV[2] doc JSON -> 1 when written
    WRITE = """
    if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[1]) then return 0 end
    redis.call('SET', KEYS[1], ARGV[2])
    redis.call('SET', KEYS[2], ARGV[1])
    return 1
    """

    def __init__(self, masters: Masters, prefix: str, owner: str | None = None) -> None:
        self.masters = masters
        self.prefix = prefix
        self.lock = Redlock(masters, prefix=prefix, owner=owner)
        self._write = masters.script(self.WRITE)

    @classmethod
    def for_app(cls, app: Any, timeout: float | None = None) -> RuntimeStore:
        """The store of ``app``'s masters; ``timeout`` per master (default: the beat's
        ``singleton_beat_node_timeout``)."""
        config = Config.from_conf(app.conf)
        masters = Masters.from_urls(config.redis_urls, timeout or config.node_timeout)
        return cls(masters, config.key_prefix)

    @property
    def doc_key(self) -> str:
        return f"{self.prefix}schedule:doc"

    @property
    def rev_key(self) -> str:
        return f"{self.prefix}schedule:rev"

    def revision(self) -> int:
        """The newest revision a majority of masters answers with (0: never edited)."""
        return max(int(reply[0] or 0) for reply in self.majority([("GET", self.rev_key)]))

    def read(self) -> tuple[int, dict[str, Any]]:
        """The newest revision and its document."""
        answers = self.majority([("GET", self.rev_key), ("GET", self.doc_key)])
        rev, raw = max(((int(a[0] or 0), a[1]) for a in answers), key=lambda pair: pair[0])
        doc = json.loads(raw) if raw else {}
        doc.setdefault("entries", {})
        doc.setdefault("runs", {})
        doc.setdefault("paused", {})
        return rev, doc

    def edit(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Apply ``change`` to the newest document under the edit lock and write it back;
        returns what ``change`` returned."""
        lease = self.lock.acquire("schedule-edit", EDIT_TTL, wait=EDIT_WAIT)
        if lease is None:
            raise LockHeld(f"{self.prefix}schedule-edit")
        try:
            rev, doc = self.read()
            result = change(doc)
            payload = json.dumps(doc, sort_keys=True, separators=(",", ":"))
            command = ("EVALSHA", self._write, 2, self.doc_key, self.rev_key, rev + 1, payload)
            self.majority([command])
            return result
        finally:
            self.lock.release(lease)

    def close(self) -> None:
        self.masters.close()

    def majority(self, commands: list[tuple[Any, ...]]) -> list[list[Any]]:
        """Send ``commands`` to every master; the replies of a majority, or raise."""
        replies = self.masters.broadcast(commands)
        answers = [r for r in replies if not isinstance(r, Exception)]
        if len(answers) < self.masters.quorum:
            errors = {
                node.name: describe(reply)
                for node, reply in zip(self.masters.nodes, replies, strict=True)
                if isinstance(reply, Exception)
            }
            raise QuorumUnavailable("schedule", self.masters.quorum, len(replies), errors)
        return answers


class RunMarks:
    """Which run-now requests were sent: ``schedule:ran:{run id}`` on the masters, written
    by the replica that sent the run (no edit lock in the beat loop)."""

    def __init__(self, store: RuntimeStore, retention: float) -> None:
        self.store = store
        self.retention_ms = int(retention * 1000)

    def key(self, run_id: str) -> str:
        return f"{self.store.prefix}schedule:ran:{run_id}"

    def mark(self, run_id: str) -> None:
        self.store.masters.broadcast([("SET", self.key(run_id), 1, "PX", self.retention_ms)])

    def sent(self, run_ids: list[str]) -> set[str]:
        """The ids of ``run_ids`` that a master knows were sent."""
        if not run_ids:
            return set()
        answers = self.store.majority([("GET", self.key(r)) for r in run_ids])
        return {r for i, r in enumerate(run_ids) if any(a[i] for a in answers)}

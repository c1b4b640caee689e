"""Prometheus metrics, fed by the library's events (install the ``[prometheus]`` extra).

Beat serves them on ``/metrics`` of its health port. In workers, call :func:`install`
once per process (for example from ``worker_process_init``) and expose them the way you
already expose worker metrics; with several worker processes use prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the workers start).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from celery_singleton_beat.core.schema import SkipReason
from celery_singleton_beat.observe import events

PREFIX = "celery_singleton_beat"


class Metrics:
    """The library's metrics in one registry, updated from events."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        options: dict[str, Any] = {"registry": registry}
        self.acquire = Histogram(
            f"{PREFIX}_lock_acquire_seconds", "Time to take a task lock, by outcome.",
            ["backend", "outcome"], **options,
        )  # fmt: skip
        self.contention = Counter(
            f"{PREFIX}_lock_contention_total", "Lock attempts that found the key held.",
            ["task"], **options,
        )  # fmt: skip
        self.dispatched = Counter(
            f"{PREFIX}_slots_dispatched_total", "Slots published by this replica.",
            ["entry"], **options,
        )  # fmt: skip
        self.skipped = Counter(
            f"{PREFIX}_slots_skipped_total", "Slots not published, by reason.",
            ["entry", "reason"], **options,
        )  # fmt: skip
        self.duplicates = Counter(
            f"{PREFIX}_duplicates_prevented_total", "Messages not run because a run had the key.",
            ["task"], **options,
        )  # fmt: skip
        self.lost = Counter(
            f"{PREFIX}_lock_lost_total", "Runs whose lock could not be extended.",
            ["task"], **options,
        )  # fmt: skip
        self.leader = Gauge(f"{PREFIX}_leader", "1 while this replica leads.", **options)
        self.replicas = Gauge(
            f"{PREFIX}_replicas", "Beat replicas with a live heartbeat.", **options
        )
        self.quorum = Gauge(
            f"{PREFIX}_quorum_reachable", "1 while a majority of masters answers.", **options
        )
        self.conflicts = Gauge(
            f"{PREFIX}_entry_conflicts",
            "Entry copies left out because an earlier schedule source gives the same name.",
            **options,
        )
        self.paused_entries = Gauge(
            f"{PREFIX}_paused_entries", "Entries paused: nothing of them is sent.", **options
        )

    def record(self, event: events.Event) -> None:
        """Update the metrics for one event."""
        if isinstance(event, events.SlotFired):
            self.dispatched.labels(event.entry).inc()
        elif isinstance(event, events.SlotSkipped):
            self.skipped.labels(event.entry, event.reason).inc(event.count)
        elif isinstance(event, events.RunSkipped) and event.reason == SkipReason.SKIPPED_DUPLICATE:
            self.duplicates.labels(event.task).inc()
        elif isinstance(event, events.LockAttempt):
            self.acquire.labels(event.backend, event.outcome).observe(event.seconds)
            if event.outcome == "held":
                self.contention.labels(event.task).inc()
        elif isinstance(event, events.LockLost):
            self.lost.labels(event.task).inc()
        elif isinstance(event, events.LeaderChanged):
            self.leader.set(1 if event.leader else 0)
        elif isinstance(event, events.ReplicaSeen):
            self.replicas.set(event.replicas)
            self.paused_entries.set(event.paused)
            self.quorum.set(1 if event.ready else 0)
        elif isinstance(event, events.QuorumChanged):
            self.quorum.set(1 if event.reachable else 0)
        elif isinstance(event, events.EntryConflict):
            self.conflicts.inc(-1 if event.gone else 1)

    def render(self) -> tuple[bytes, str]:
        """The metrics as Prometheus text, with its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_installed: Metrics | None = None


def install(registry: CollectorRegistry = REGISTRY) -> Metrics:
    """Create the metrics (once per process) and subscribe them to the library's events."""
    global _installed  # noqa: PLW0603  (one set of metrics per process)
    if _installed is None:
        _installed = Metrics(registry)
        events.subscribe(_installed.record)
    return _installed

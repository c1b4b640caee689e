"""The Celery Beat scheduler that runs on every replica and dispatches each slot once.

Every replica runs ``celery beat -S singleton`` with the same schedule. :class:`Scheduler`
plugs into Celery's ``beat.Scheduler`` through its override points (``setup_schedule``,
``tick``, ``apply_async``, ``close``, ``info``), as Celery's own ``PersistentScheduler``
and django-celery-beat's ``DatabaseScheduler`` do, and hands the work to its parts:

- :mod:`.dispatch`: claims each due slot's fence in the slot store, publishes the slots it
  won, marks them done;
- :mod:`.backfill`: sends the slots of the backfills asked for, paced;
- :mod:`.leadership`: in ``leader`` mode, whether this replica evaluates the schedule;
- :mod:`.wakeups`: when each entry is looked at next;
- :class:`~celery_singleton_beat.sources.watcher.SourceWatcher`: when the schedule source
  is read again.

Both clocks come from the app's runtime (``Runtime.of(app).clock`` and ``.monotonic``), so
a test drives the loop tick by tick on a fake clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from celery import Celery, beat
from celery.schedules import maybe_schedule

from celery_singleton_beat._compat import (
    evaluate_entry_args,
    evaluate_entry_kwargs,
    producer_batch,
)
from celery_singleton_beat.beat import broker
from celery_singleton_beat.beat import log as beat_log
from celery_singleton_beat.beat.backfill import Backfiller
from celery_singleton_beat.beat.dispatch import CLAIM_CHUNK, PASS_ENTRIES, Dispatcher, log_fields
from celery_singleton_beat.beat.health import HealthServer, Probed
from celery_singleton_beat.beat.leadership import Leadership
from celery_singleton_beat.beat.loading import Loader
from celery_singleton_beat.beat.unknown_tasks import UnknownTasks
from celery_singleton_beat.beat.wakeups import LONGEST_SLEEP, Wakeups
from celery_singleton_beat.core import overlap
from celery_singleton_beat.core.batches import batches, name_size
from celery_singleton_beat.core.entries import Entry, Plan
from celery_singleton_beat.core.replan import Changes, compare
from celery_singleton_beat.core.schema import PAUSE_KINDS, Header, Mode, Overlap
from celery_singleton_beat.core.share import Share, schedule_mark
from celery_singleton_beat.core.slots import (
    OnceSlots,
    Slots,
    slot_label,
    slot_task_id,
    to_datetime,
)
from celery_singleton_beat.errors import ConfigurationError, StoreUnavailable
from celery_singleton_beat.observe import events
from celery_singleton_beat.runtime import Runtime
from celery_singleton_beat.settings import defaults
from celery_singleton_beat.settings.config import as_written, store_reason
from celery_singleton_beat.sources import BEAT_SCHEDULE, load_source
from celery_singleton_beat.sources.watcher import POLL_EVERY, SourceWatcher
from celery_singleton_beat.stores.base import replica_id

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0
#: Longest sleep while another replica's slots wait on their owner's progress (s).
PARKED_EVERY = 0.25
#: The longest pause between two ticks while the store does not answer (with jitter): a
#: failover of a Redis primary takes seconds, and beat publishes again within about this
#: long of it; a tick that fails costs one refused connection or one node timeout.
LONGEST_BACKOFF = 1.0
#: Heartbeats outlive this many missed beats before the replica drops off the list.
HEARTBEAT_TTL = defaults.HEARTBEAT_TTL
SLOT_HEADER = Header.SLOT.value
ENTRY_HEADER = Header.ENTRY.value
REPLICA_HEADER = Header.REPLICA.value
#: Milliseconds after a change is seen until a changed entry looks again at the slots of
#: its old schedule that another replica held then.
HELD_AGAIN = 250


@dataclasses.dataclass
class _Sending:
    """The slot being sent through ``apply_entry``, and how its publish ended."""

    slot: int
    task_id: str
    track: bool = False
    """Whether workers report the run's state (the entry's overlap policy needs it)."""
    slot_kwarg: str | None = None
    """The keyword argument that receives the slot's time (the entry's ``slot_kwarg``)."""
    pause_on_failure: int = 0
    """After how many consecutive failed runs workers pause the entry (0: never)."""
    error: Exception | None = None


class Scheduler(beat.Scheduler):  # type: ignore[misc]
    """Highly available beat scheduler: ``beat_scheduler = "celery_singleton_beat.Scheduler"``."""

    Entry = Entry
    refused: ConfigurationError | None = None
    _health: HealthServer | None
    """Why the settings stop beat, on the scheduler Celery makes for its banner only."""

    def __init__(self, app: Celery, *args: Any, lazy: bool = False, **kwargs: Any) -> None:
        beat_log.install()  # first: an error from here on is logged as one line
        self.runtime = Runtime.of(app)
        try:
            self._assemble(app)
        except ConfigurationError as exc:
            if not lazy or str(exc.name).startswith("broker_url"):
                raise  # a refused broker URL: the banner would read it next, and fail on it
            # the banner's scheduler, made before beat sets its logging up: beat makes
            # the scheduler again when it starts, and the error is logged as one line then
            self.refused = exc
            super().__init__(app, *args, lazy=True, **kwargs)
            return
        port = None if lazy else self.config.health_port
        metrics = _metrics_renderer() if port is not None else None  # before the first read
        super().__init__(app, *args, lazy=lazy, **kwargs)
        if port is not None:
            try:
                self._health = HealthServer(
                    port, self.alive, self.ready, metrics, host=self.config.health_host
                ).start()
            except ConfigurationError as exc:
                raise as_written(app.conf, exc) from None

    def _assemble(self, app: Celery) -> None:
        """The settings, the store, the sources and the parts beat runs with."""
        self.config = self.runtime.config
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.store = self.runtime.store
        self.plans: dict[str, Plan] = {}
        self._specs: dict[str, Any] = {}
        self._schedules: dict[tuple[Any, bool], Any] = {}
        self._paused_of: dict[str, Plan] | None = None
        self._paused_names: list[str] = []
        self.source = load_source(app, self.config.schedule_source)
        self._watcher = SourceWatcher(self.source, self.runtime.monotonic)
        self._unknown_tasks = UnknownTasks(app)
        self.wakeups = Wakeups()
        self.leadership = Leadership(
            self.config, self.store.leader_lock(self.replica), self.replica, self._stale
        )
        self.dispatcher = Dispatcher(
            self.runtime, self.store, self.store, self.source, self.wakeups, sender=self,
            may_publish=self.leadership.may_publish, replica=self.replica,
        )  # fmt: skip
        self.backfiller = Backfiller(self.store, self.config, self, self.replica)
        self.loader = Loader(
            self.store, self.store, self.wakeups, wake=self.dispatcher.wake_seen,
            now_ms=self.runtime.now_ms, monotonic=self.runtime.monotonic,
            report=self._report_scheduled,
        )  # fmt: skip
        self._shares = self.config.mode == Mode.ACTIVE and self.config.share_grace > 0
        """Whether this replica takes a share of the entries (``singleton_beat_share_grace``)."""
        self._marked: dict[str, Plan] | None = None
        """The plans the dispatcher's schedule mark was made of."""
        self._progress_seen: tuple[float, dict[str, dict[str, Any]]] | None = None
        """When the replicas' heartbeat info was read last (monotonic s), and what."""
        if self._shares:
            self.dispatcher.progress = self._progress
        self._broker_cold = True
        self._initialized = False
        self._ready: bool | None = None
        self._ready_detail = "starting"
        self._failures = 0
        self._last_tick = self.runtime.monotonic()
        self._next_heartbeat = 0.0
        self._health = None
        self._sending: _Sending | None = None

    # -- Celery's Scheduler interface -------------------------------------------------

    @cached_property
    def connection(self) -> Any:
        """Beat's broker connection, with socket timeouts so that a publish is bounded."""
        return self.app.connection_for_write(
            transport_options=broker.publish_timeouts(self.app.conf, self.config.publish_timeout)
        )

    def setup_schedule(self) -> None:
        self._specs = _own(self._watcher.first())
        self.plans = self._build(self._specs, {}, starting=True)
        self.data = {name: plan.entry for name, plan in self.plans.items()}
        self._unknown_tasks.warn(self.plans.values())
        self._initialized = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass of the loop; returns how long to sleep before the next."""
        self._last_tick = self.runtime.monotonic()
        try:
            delay = self._tick()
        except StoreUnavailable as exc:
            self._set_ready(False, str(exc))
            self._failures += 1
            backoff = min(LONGEST_BACKOFF, 0.25 * 2.0 ** min(self._failures, 5))
            return backoff * random.uniform(0.75, 1.25)
        self._failures = 0
        self._set_ready(True, self.store.up_text)
        return delay

    def apply_async(
        self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        """Publish the slot being sent, with its task id and slot headers; called by
        Celery's ``apply_entry``, after integrations wrapping it changed ``entry.options``."""
        sending = self._sending
        if sending is None:
            return super().apply_async(entry, producer, advance, **kwargs)
        try:
            return self._send_slot(entry, sending, producer)
        except Exception as exc:  # Celery's apply_entry would log and drop it
            sending.error = exc
            return None

    def close(self) -> None:
        if self._health is not None:
            self._health.stop()
            self._health = None
        self.leadership.step_down("shutting down", release=True)
        try:
            self.store.forget_replica(self.replica)
        finally:
            self.source.close()
            self.runtime.close_store()
            super().close()

    @property
    def info(self) -> str:
        if self.refused is not None:
            return "    . singleton beat -> cannot start (the error follows)"
        reason = store_reason(self.app.conf)
        return (
            f"    . singleton beat -> mode {self.config.mode}, key prefix "
            f"{self.config.key_prefix!r}\n    . {self.store.describe()}"
            + ("" if reason is None else f"\n      ({reason})")
        )

    # -- probes -----------------------------------------------------------------------

    def alive(self) -> Probed:
        age = self.runtime.monotonic() - self._last_tick
        return Probed(age < 10 * LONGEST_SLEEP, f"last tick {age:.1f}s ago")

    def ready(self) -> Probed:
        """Ready while the slot store answers. Entries left out because two sources give
        their name are told in the detail: the replica still schedules every other entry,
        and a rolling restart must not wait on an edit of the schedule."""
        conflicts = self.source.conflicts
        if not conflicts:
            return Probed(bool(self._ready), self._ready_detail)
        left_out = "; ".join(str(c) for c in conflicts)
        count = f"{len(conflicts)} entr{'y' if len(conflicts) == 1 else 'ies'}"
        return Probed(bool(self._ready), f"{self._ready_detail}; {count} left out: {left_out}")

    # -- the loop ---------------------------------------------------------------------

    def _tick(self) -> float:
        monotonic = self.runtime.monotonic()
        if monotonic >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = monotonic + HEARTBEAT_EVERY
            # one round trip per idle tick: a poll due now waits a quarter second, which
            # puts the polls halfway between heartbeats from then on
            self._watcher.defer(monotonic + POLL_EVERY / 2)
        if not self.leadership.lead(monotonic):
            return min(LONGEST_SLEEP, self.leadership.next_election - monotonic)
        specs = self._watcher.poll(monotonic)
        if specs is not None:
            self._replan(specs)
        if not self._initialized or self.loader.loading:
            self._broker_cold = self._broker_cold or not self._initialized
            self._load_state()
        if self._broker_cold:
            self._warm_broker()
        now = self.runtime.now_ms()
        due = self.wakeups.pop_due(self.plans, now, PASS_ENTRIES)
        if due:
            self.dispatcher.dispatch(due, now)
        if self._shares and self._initialized and not self.loader.loading:
            if self._marked is not self.plans:  # the schedule changed: named again
                self.dispatcher.schedule_mark = schedule_mark(self.plans)
                self._marked = self.plans
            self.dispatcher.unpark(now)
            self.dispatcher.progressed(self.plans, now)
        else:  # entries not read yet are not in the wake-ups: nothing to tell
            self.dispatcher.through = None
        control = self.source.control
        requests = control.backfills if control is not None else {}
        backfill = self.backfiller.run(requests, self.plans, now) if requests else None
        monotonic = self.runtime.monotonic()
        until = min(self._watcher.next_poll, self._next_heartbeat) - monotonic
        if backfill is not None:
            until = min(until, (backfill - self.runtime.now_ms()) / 1000)
        if self.dispatcher.parked:  # their owners' progress is looked at every quarter second
            until = min(until, PARKED_EVERY)
        return min(self.wakeups.sleep_for(self.runtime.now_ms()), max(0.0, until))

    def _heartbeat(self) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mode": self.config.mode,
            "role": self.leadership.role,
            "last_tick": self.runtime.clock(),
            "entries": len(self.plans),
            "ttl": HEARTBEAT_TTL,
        }
        if self.loader.loading:
            info["initialised"] = self.loader.done
        if self._shares and self._initialized and not self.loader.loading:
            info["share"] = True  # a share once every entry is read
            mark, through = self.dispatcher.share_mark, self.dispatcher.through
            if mark is not None and through is not None:
                info["through"], info["share_of"] = through, mark
            info["moved"] = round(self.runtime.monotonic() - self.dispatcher.moved, 3)
        alive = self.store.heartbeat(self.replica, info, HEARTBEAT_TTL)
        if self._shares:
            self._follow_share()
        events.emit(
            events.ReplicaSeen(
                host=str(info["host"]), pid=os.getpid(), mode=self.config.mode,
                role=self.leadership.role, ready=bool(self._ready), replicas=alive,
                paused=self._paused(),
            )
        )  # fmt: skip

    def _paused(self) -> dict[str, int]:
        """The entries this replica holds paused, counted by who paused them (at each
        heartbeat: the paused ones are found again only when the plans change, so that
        a million entries cost nothing here)."""
        if self._paused_of is not self.plans:
            self._paused_names = [n for n, plan in self.plans.items() if plan.policy.paused]
            self._paused_of = self.plans
        counts = dict.fromkeys(PAUSE_KINDS, 0)
        for name in self._paused_names:
            counts[self.source.pause_kind(name)] += 1
        return counts

    def _progress(self) -> tuple[float, dict[str, dict[str, Any]]]:
        """The live replicas' heartbeat info by id, read at most twice per heartbeat
        period, when another replica's slots are late by the grace."""
        monotonic = self.runtime.monotonic()
        seen = self._progress_seen
        if seen is None or monotonic - seen[0] >= HEARTBEAT_EVERY / 2:
            found = {replica_id(r): r for r in self.store.replicas()}
            seen = self._progress_seen = (monotonic, found)
        return seen

    def _follow_share(self) -> None:
        """Who owns which entries, from the replicas that take a share (see
        :mod:`celery_singleton_beat.core.share`)."""
        share = Share(self.replica, self.store.sharing(within=2 * HEARTBEAT_EVERY))
        current = self.dispatcher.share
        if share == current:
            return
        self.dispatcher.follow(share, self.runtime.now_ms())
        logger.info(
            "singleton beat: %d replica(s) share the entries; this one claims its share when "
            "due and the others' %.1fs late", len(share.replicas), self.config.share_grace,
        )  # fmt: skip

    def _load_state(self) -> None:
        """Read the entries' shared progress a few batches per tick (see :mod:`.loading`);
        entries read are dispatched while the rest load."""
        if not self._initialized:
            self._initialized = True
            self.loader.start(self.plans.values())
        if self.loader.run():
            logger.info(
                "singleton beat: %d entries loaded, %s", len(self.plans), self.leadership.role
            )

    def _stale(self) -> None:
        """Every entry's progress is read again before the next dispatch (a standby that
        became the leader: its view of the schedule is stale)."""
        self._initialized = False

    def _warm_broker(self) -> None:
        """Connect to the broker before claiming anything, so that no claim waits on a
        connection's handshake (on a slow broker, several round trips)."""
        self._broker_cold = False
        try:
            broker.warm(self.producer, self._queues())
        except Exception as exc:
            logger.warning("singleton beat: the broker does not answer yet: %s", exc)

    def _queues(self) -> list[Any]:
        """The queues the entries' messages are routed to."""
        queues: dict[str, Any] = {}
        router = self.app.amqp.router
        for plan in self.plans.values():
            entry = plan.entry
            try:
                queue = router.route(entry.publish_options(), entry.task, (), {})["queue"]
            except Exception:
                continue
            if queue is not None:
                queues.setdefault(queue.name, queue)
        return list(queues.values())

    # -- schedule changes -------------------------------------------------------------

    def _replan(self, specs: Any) -> None:
        """Follow a schedule source's new entries (see :mod:`celery_singleton_beat.core.replan`)."""
        previous, self._specs = self._specs, _own(specs)
        changes = compare(self.plans, self._build(specs, previous))
        if not changes:
            return
        now = self.runtime.now_ms()
        self._unknown_tasks.warn(changes.plans.values())
        running, self.plans = self.plans, changes.plans
        self.data = {name: plan.entry for name, plan in self.plans.items()}
        self._report_scheduled([(name, now, None) for name in changes.removed])
        self.loader.drop([*changes.removed, *(plan.name for plan in changes.changed)])
        if self._initialized:
            try:
                self._finish_old(running, changes, now)
                for gone in batches(changes.removed, name_size):
                    self.store.mark_gone(gone, now)
                self._start_fresh(changes, now)
            except StoreUnavailable:
                self._initialized = False  # every plan is loaded again once a majority answers
                raise
        logger.info(
            "singleton beat: schedule changed: %d added, %d changed, %d resumed, %d removed, "
            "%d updated", len(changes.added), len(changes.changed), len(changes.resumed),
            len(changes.removed), changes.updated,
        )  # fmt: skip

    def _shared_schedule(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with an interval given as a number or a timedelta turned into the
        one Celery ``schedule`` kept for that interval: it is immutable, and a schedule of
        a million hourly entries then holds one, not a million."""
        every = fields.get("schedule")
        if type(every) in (int, float, dt.timedelta):
            key = (every, bool(fields.get("relative", False)))
            if key not in self._schedules:
                self._schedules[key] = maybe_schedule(every, key[1], app=self.app)
            fields["schedule"] = self._schedules[key]
        return fields

    def _build(
        self, specs: Any, previous: dict[str, Any], starting: bool = False
    ) -> dict[str, Plan]:
        """A plan per entry; one the source gave before (the very same object) keeps its
        plan. An entry that cannot be built is logged and left out, or keeps its previous
        form: it is data, and stops no replica. At start, one of ``beat_schedule`` stops
        beat instead: it is code, and a deploy must not go on without it."""
        built: dict[str, Plan] = {}
        now = self.app.now()  # read once: Celery's entry reads the clock for each otherwise
        for name, spec in specs.items():
            if previous.get(name) is spec and name in self.plans:
                built[name] = self.plans[name]
                continue
            try:
                entry = self.Entry(**self._shared_schedule(
                    {"last_run_at": now, **spec, "name": name, "app": self.app}
                ))  # fmt: skip
                built[name] = Plan.build(entry, self.app.timezone, self.config.misfire_grace)
            except Exception as exc:
                if starting and self.source.source_of(name) == BEAT_SCHEDULE:
                    raise
                logger.error(
                    "singleton beat: entry %r of the schedule source %r is refused, %s: %s",
                    name, self.source.source_of(name),
                    "keeping its previous form" if name in self.plans else "left out", exc,
                )  # fmt: skip
                if name in self.plans:
                    built[name] = self.plans[name]
        return built

    def _finish_old(self, running: dict[str, Plan], changes: Changes, now: int) -> None:
        """The slots a changed or removed entry's old schedule had due up to ``now``, the
        moment the change is seen, are that version's: they are decided by it (sent, held
        back or counted missed) before the new version starts after ``now``. A change
        seen just after a slot fell due must not lose it::

            editor:  save every 4 s (was 8 s)
            replica:      ── slot 16.000 due ── tick 16.080: change seen ── next slot 20
                                                 slot 16 decided here, as the old version's

        A replica that read the source a moment later would have sent it anyway; the
        dashboard counts it under the old version, whose slots run up to the new one's
        ``since`` (``now``). Slots another replica holds stay in view of the new plan.
        An entry paused then has its old schedule's slots of the pause counted missed: a
        resume decides only the new schedule's."""
        ending = [running[p.name] for p in changes.changed]
        ending += [running[name] for name in changes.removed]
        due = [plan for plan in ending if plan.next_slot is not None and plan.next_slot <= now]
        if due:
            if self._broker_cold:
                self._warm_broker()
            self.dispatcher.dispatch(due, now, ending=True)
        for plan in changes.changed:
            plan.held |= running[plan.name].held

    def _start_fresh(self, changes: Changes, now: int) -> None:
        """Added and changed plans start from their first slot after ``now`` (one with a
        single slot from that slot); resumed ones from where they stopped (their missed
        slots follow the misfire policy)."""
        fresh = [plan for plan in changes.fresh if not isinstance(plan.slots, OnceSlots)]
        owed: list[tuple[str, int, Slots | None]] = []
        for plan in changes.fresh:
            if isinstance(plan.slots, OnceSlots):
                # a single slot (run now, one-off, clocked) keeps its time even when seen
                # late: its fence sends it once, the misfire policy decides how late
                plan.next_slot = plan.slots.at_ms
                self.dispatcher.wake_seen(plan, plan.next_slot, now)
                owed.append((plan.name, now, plan.slots))
        for batch in batches(fresh, _plan_size):
            loaded = self.store.init([(p.name, p.every_ms) for p in batch], now)
            self.store.start_at([p.name for p in batch], now)
            for plan, (last, anchor) in zip(batch, loaded, strict=True):
                if anchor is not None:
                    plan.anchor(anchor)
                plan.next_slot = plan.slots.next_after(max(last, now))
                self.dispatcher.wake_seen(plan, plan.next_slot, now)
                if plan.held and (plan.wake is None or plan.wake > now + HELD_AGAIN):
                    self.wakeups.wake(plan, now + HELD_AGAIN)  # slots another replica holds
                owed.append((plan.name, max(last, now), plan.slots))
            self._broker_cold = True
        self._report_scheduled(owed)
        for plan in changes.resumed:
            self.dispatcher.wake_seen(plan, min(plan.next_slot or now, now), now)

    def _report_scheduled(self, owed: Sequence[tuple[str, int, Slots | None]]) -> None:
        """Tell recorders which slots each entry owes from when on (``None``: none, it
        left the schedule): an :class:`~celery_singleton_beat.observe.events.EntryScheduled`
        each. A single slot (run now, one-off, clocked) is owed whenever it falls; it is
        told from the moment it is seen."""
        if not events.wanted():
            return
        for name, since, slots in owed:
            events.emit(
                events.EntryScheduled(
                    entry=name, since=to_datetime(since), slots=slots, replica=self.replica
                )
            )

    # -- sending slots (the dispatcher's Sender) ----------------------------------------

    def publish_slot(self, plan: Plan, slot: int) -> str:
        """Send one slot through Celery's ``apply_entry`` (see :mod:`.log`)."""
        policy = plan.policy
        sending = _Sending(
            slot, slot_task_id(plan.name, slot), track=policy.overlap != Overlap.ALLOW,
            slot_kwarg=policy.slot_kwarg, pause_on_failure=policy.pause_on_failure,
        )  # fmt: skip
        self._sending = sending
        try:
            with beat_log.sending(**log_fields(self.replica, plan, slot)):
                self.apply_entry(plan.entry, producer=self.producer)
        finally:
            self._sending = None
        if sending.error is not None:
            raise sending.error
        return sending.task_id

    def publish_batch(self) -> Any:
        """Messages published inside go to the broker together at its end (one pipeline on
        Redis, with kombu >= 5.7); brokers without batches publish each message at once."""
        return producer_batch(self.producer, max_size=2 * CLAIM_CHUNK + 16)

    def slot_published(self, plan: Plan, slot: int) -> None:
        """Called between publishing a slot and marking it done (a seam for failure tests)."""

    def broker_failed(self) -> None:
        """A publish failed: connect and declare the queues again before the next claim."""
        self._broker_cold = True

    def cut_broker(self) -> int:
        """Shut the broker connection down from the claim keeper's thread (publish timeout)."""
        return broker.cut(self.producer)

    def _send_slot(self, entry: Any, sending: _Sending, producer: Any) -> Any:
        options = entry.publish_options()
        headers = dict(options.pop("headers", None) or {})
        headers.update(
            {
                Header.BEAT_TASK.value: True,
                SLOT_HEADER: slot_label(sending.slot),
                ENTRY_HEADER: entry.name,
                REPLICA_HEADER: self.replica,
            }
        )
        if sending.track:
            headers[overlap.TRACK_HEADER] = 1
        if sending.pause_on_failure:
            headers[Header.PAUSE_ON_FAILURE.value] = sending.pause_on_failure
        args = evaluate_entry_args(entry.args)
        kwargs = evaluate_entry_kwargs(entry.kwargs)
        if sending.slot_kwarg is not None:
            kwargs = {**kwargs, sending.slot_kwarg: slot_label(sending.slot)}
        task = self.app.tasks.get(entry.task)
        send = task.apply_async if task is not None else self._send_task(entry.task)
        # no retry inside kombu: a publish that failed is given back and sent again under
        # the slot's fence, never re-sent by kombu on a connection whose claim has expired
        options["retry"] = False
        return send(
            args, kwargs, producer=producer, task_id=sending.task_id, headers=headers, **options
        )

    def _send_task(self, name: str) -> Any:
        return lambda args, kwargs, **options: self.app.send_task(name, args, kwargs, **options)

    # -- readiness --------------------------------------------------------------------

    def _set_ready(self, ready: bool, detail: str) -> None:
        self._ready_detail = detail
        if ready == self._ready:
            return
        previous, self._ready = self._ready, ready
        events.emit(events.QuorumChanged(replica=self.replica, reachable=ready, detail=detail))
        if not ready:
            logger.error(
                "singleton beat: %s, publishing nothing until it is back: %s",
                self.store.down_text,
                detail,
            )
        elif previous is not None:
            logger.warning("singleton beat: %s again", self.store.up_text)


def _plan_size(plan: Plan) -> int:
    return name_size(plan.name)


def _metrics_renderer() -> Callable[[], tuple[bytes, str]] | None:
    """``/metrics`` when prometheus-client is installed (the ``[prometheus]`` extra)."""
    try:
        from celery_singleton_beat.observe import metrics  # noqa: PLC0415  (optional extra)
    except ImportError:
        logger.info("singleton beat: prometheus-client is not installed; no /metrics")
        return None
    return metrics.install().render


def _own(specs: Mapping[str, Any]) -> dict[str, Any]:
    """The entries as a dict the scheduler keeps: the merged source's, made for each read
    (a million entries are not copied once more)."""
    return specs if type(specs) is dict else dict(specs)

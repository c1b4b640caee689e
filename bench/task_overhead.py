"""What SingletonTask adds to a no-op task on one worker: plain Celery and celery-singleton.

Starts three redis-server masters and a Redis broker on free ports and one worker
(prefork pool, one child process) of bench/task_overhead_app.py. Sends the same number of
no-op messages of each variant, in interleaved rounds, each message with its own
argument (so no variant deduplicates): a plain task, the floor (a plain task taking and
releasing a lock on one master as SingletonTask does, one round trip and a posted
release, on a raw socket, with no library code), SingletonTask over one and over
three masters, the same over three masters with a beat slot's headers (slot-aware: it
also claims the slot), and celery-singleton's Singleton on one node (it locks when
sending).

Each variant has its own queue. A round queues a variant's messages while the worker
does not consume that queue, then lets the worker drain it alone: the worker never
shares the two cores with the benchmark's own sending.

What a worker adds to every task to drop a second copy of a beat slot
(``singleton_beat_drop_slot_copies``) happens in its main process, before the pool, so it
is outside the task call. It is measured twice, each time with the drop on and off, with
and without a slot's headers (every slot distinct, so every message runs): as the
worker's time per message while draining a plain task's queue (a second worker, started
with the drop off, drains the "off" queues), and, after the workers stopped, in this
process as the worker's main process does it: each message's request made as Celery's
strategy makes it for the plain task and handed to a pool with a free process.

Prints, per variant: the cost of sending one message, the median time the worker spends
in the task call (``task_prerun`` to ``task_postrun``: lock, body, release) with the
lowest and highest per-round median, what that adds over the plain task, and the
worker's throughput while draining. Prints nothing but the failure if any run failed.

    python bench/task_overhead.py [--messages 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import redis
from celery.worker.request import Request, create_request_cls
from kombu import Message

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from celery_singleton_beat.tasks import copies  # noqa: E402
from celery_singleton_beat.tasks.singleton import ENTRY_HEADER, SLOT_HEADER  # noqa: E402
from celery_singleton_beat.testing import CeleryCluster, redis_servers, wait_for  # noqa: E402

VARIANTS = [
    "floor_1", "ours_1", "ours_3", "slot_3", "celery_singleton",
    "plain_off", "plain", "plain_off_slot", "plain_slot",
]  # fmt: skip
"""In each round, in this order; the plain task's four next to each other."""
OFF = {"plain_off", "plain_off_slot"}
"""Variants drained by the worker with ``singleton_beat_drop_slot_copies = False``."""
SLOTTED = {"slot_3", "plain_slot", "plain_off_slot"}
"""Variants whose messages carry a beat slot's headers."""
LABELS = {
    "plain": "plain Celery task",
    "floor_1": "floor: raw socket, 1 master",
    "ours_1": "SingletonTask, 1 master",
    "ours_3": "SingletonTask, 3 masters",
    "slot_3": "  + slot headers, 3 masters",
    "celery_singleton": "celery-singleton, 1 node",
    "plain_off": "plain task, drop off",
    "plain_off_slot": "  + slot headers, drop off",
    "plain_slot": "plain task + slot headers",
}
GOALS = {"ours_1": 250.0, "ours_3": 500.0}  # µs added per execution, at most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="per variant")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    per_round = args.messages // args.rounds
    with redis_servers(4) as servers, tempfile.TemporaryDirectory() as workdir:
        *masters, broker = servers
        env = {
            "PYTHONPATH": f"{HERE}:{HERE.parent}",
            "BENCH_BROKER": broker.url,
            "BENCH_MASTERS": ",".join(m.url for m in masters),
        }
        sys.path.insert(0, str(HERE))
        os.environ.update(env)
        import task_overhead_app as bench_app

        cluster = CeleryCluster(Path(workdir), "task_overhead_app", env, queue="overhead")
        try:
            cluster.start_worker(pool="prefork", concurrency=1)
            cluster.start_worker("worker-off", pool="prefork", concurrency=1, BENCH_DROP_COPIES="0")
            results = run(bench_app, broker.url, per_round, args.rounds)
        finally:
            cluster.stop()
        handed = handoff(bench_app, per_round, args.rounds)
        alone = handoff_alone(bench_app)
    report(results, per_round * args.rounds)
    report_handoff(handed, per_round * args.rounds, alone)


def run(bench_app: Any, broker: str, per_round: int, rounds: int) -> dict[str, dict[str, Any]]:
    client = redis.Redis.from_url(broker)
    control = bench_app.app.control
    host = socket.gethostname()
    workers = {True: [f"worker@{host}"], False: [f"worker-off@{host}"]}  # drop on, off
    send = dict.fromkeys(VARIANTS, 0.0)
    wall = dict.fromkeys(VARIANTS, 0.0)
    medians: dict[str, list[float]] = {name: [] for name in VARIANTS}
    drained: dict[str, list[float]] = {name: [] for name in VARIANTS}  # per round, seconds
    sequence = 0
    for _ in range(rounds):
        for name in VARIANTS:
            task, queue = getattr(bench_app, name), f"overhead-{name}"
            headers = {ENTRY_HEADER: "bench"} if name in SLOTTED else {}
            worker = workers[name not in OFF]
            done_before = client.llen(f"took:{name}")
            started = time.perf_counter()
            for _ in range(per_round):
                sequence += 1
                slot = {SLOT_HEADER: f"slot-{sequence}"} if headers else {}
                task.apply_async((sequence,), queue=queue, headers={**headers, **slot})
            send[name] += time.perf_counter() - started
            started = time.perf_counter()
            control.add_consumer(queue, destination=worker, reply=True)
            target = done_before + per_round
            wait_for(lambda n=name, t=target: client.llen(f"took:{n}") >= t, 120, f"{name} drained")
            drained[name].append(time.perf_counter() - started)
            wall[name] += drained[name][-1]
            control.cancel_consumer(queue, destination=worker, reply=True)
            took = [json.loads(x) for x in client.lrange(f"took:{name}", done_before, -1)]
            if None in took or len(took) != per_round:
                failed = took.count(None) + per_round - len(took)
                raise SystemExit(f"{name}: {failed} of {per_round} runs failed; no figures")
            medians[name].append(statistics.median(took))
    results = {}
    for name in VARIANTS:
        took = [json.loads(x) for x in client.lrange(f"took:{name}", 0, -1)]
        results[name] = {
            "send": send[name],
            "wall": wall[name],
            "median": statistics.median(took),
            "rounds": medians[name],
            "drained": [seconds / per_round for seconds in drained[name]],
        }
    return results


HANDOFF = {
    "off": (False, False),
    "on": (True, False),
    "off_slot": (False, True),
    "on_slot": (True, True),
}
"""The worker's main process: (drop on, slot headers), in this order in each round."""
HANDOFF_LABELS = {
    "off": "Celery's request",
    "on": "drop on",
    "off_slot": "Celery's request, slot headers",
    "on_slot": "drop on, slot headers",
}


class _FreePool:
    """A pool with a process free for every message: it takes the message and does nothing
    with it (the real pool's work is the same with the drop on or off)."""

    def apply_async(self, *args: Any, **kwargs: Any) -> None:
        return None


def handoff(bench_app: Any, messages: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per message the worker's main process spends between a message and the pool:
    the request made (as Celery's strategy makes it for the plain task) and handed over,
    with Celery's request class and with the one that drops a slot's second copy (every
    slot distinct: each takes its mark on the three masters)."""
    app, task, pool = bench_app.app, bench_app.plain, _FreePool()
    classes = {
        on: create_request_cls(copies.checking(Request) if on else Request, task, pool,
                               "bench@host", None, app=app)
        for on in (False, True)
    }  # fmt: skip
    took: dict[str, list[float]] = {name: [] for name in HANDOFF}
    sequence = 0
    for _ in range(rounds):
        for name, (on, slotted) in HANDOFF.items():
            batch = []
            for _ in range(messages):
                sequence += 1
                batch.append(_received(app, sequence, slotted))
            made = classes[on]
            started = time.perf_counter()
            for message, headers, body in batch:
                made(message, app=app, task=task, hostname="bench@host", headers=headers,
                     body=body, decoded=True).execute_using_pool(pool)  # fmt: skip
            took[name].append((time.perf_counter() - started) / messages)
    return took


def handoff_alone(bench_app: Any) -> dict[bool, float]:
    """Seconds of one hand-over of a message without slot headers, drop off and on: the
    best of seven timings of 20,000 hand-overs of one request (``timeit``'s way)."""
    app, task, pool = bench_app.app, bench_app.plain, _FreePool()
    message, headers, body = _received(app, 0, slotted=False)
    best: dict[bool, float] = {}
    for on in (False, True, False, True):
        made = create_request_cls(copies.checking(Request) if on else Request, task, pool,
                                  "bench@host", None, app=app)  # fmt: skip
        request = made(message, app=app, task=task, hostname="bench@host", headers=headers,
                       body=body, decoded=True)  # fmt: skip
        timings = timeit.repeat(lambda r=request: r.execute_using_pool(pool), number=20_000,
                                repeat=7)  # fmt: skip
        best[on] = min(best.get(on, float("inf")), min(timings) / 20_000)
    return best


def _received(app: Any, sequence: int, slotted: bool) -> tuple[Message, dict[str, Any], Any]:
    """A message of the plain task as a worker receives it: the message, its headers and
    its decoded body."""
    sent = app.amqp.as_task_v2(f"handoff-{sequence}", "plain", args=(sequence,), kwargs={})
    slot = {ENTRY_HEADER: "bench", SLOT_HEADER: f"handoff-{sequence}"} if slotted else {}
    headers = {**sent.headers, **slot}
    message = Message(body=b"", headers=headers, properties=dict(sent.properties),
                      delivery_info={"exchange": "", "routing_key": "overhead"})  # fmt: skip
    return message, headers, sent.body


def report_handoff(took: dict[str, list[float]], messages: int, alone: dict[bool, float]) -> None:
    rounds = len(took["off"])
    median = {name: statistics.median(values) * 1e6 for name, values in took.items()}
    least = {name: min(values) * 1e6 for name, values in took.items()}
    print(f"\nthe worker's main process, per message: the request made and handed to a free "
          f"pool process ({messages} messages of the plain task per variant, {rounds} "
          f"interleaved rounds)")  # fmt: skip
    print(f"{'variant':<31} {'median µs':>10} {'min µs':>8} {'max µs':>8}")
    for name, label in HANDOFF_LABELS.items():
        print(f"{label:<31} {median[name]:>10.1f} {least[name]:>8.1f} "
              f"{max(took[name]) * 1e6:>8.1f}")  # fmt: skip
    for name, what in (
        ("", "without slot headers"),
        ("_slot", "of a slot (its mark on 3 masters)"),
    ):
        print(f"drop on adds {median['on' + name] - median['off' + name]:.1f} µs (median; "
              f"{least['on' + name] - least['off' + name]:.1f} µs between the minima) per "
              f"message {what}")  # fmt: skip
    print(f"one hand-over without slot headers, best of 7 x 20,000: {alone[False] * 1e6:.2f} "
          f"µs with Celery's request, {alone[True] * 1e6:.2f} µs with the drop on "
          f"({(alone[True] - alone[False]) * 1e6:+.2f} µs)")  # fmt: skip


def report(results: dict[str, dict[str, Any]], messages: int) -> None:
    base = results["plain"]["median"] * 1e6
    rounds = len(results["plain"]["rounds"])
    print(f"{messages} no-op messages per variant, one prefork worker process, "
          f"{rounds} interleaved rounds, each queue drained alone")  # fmt: skip
    print(f"{'variant':<29} {'send µs':>8} {'task µs':>8} {'rounds min-max':>15} "
          f"{'added µs':>9} {'tasks/s':>8}")  # fmt: skip
    added = {}
    for name, label in LABELS.items():  # the plain task first
        row = results[name]
        task_us = row["median"] * 1e6
        low, high = min(row["rounds"]) * 1e6, max(row["rounds"]) * 1e6
        added[name] = task_us - base
        send_us, rate = row["send"] / messages * 1e6, messages / row["wall"]
        print(f"{label:<29} {send_us:>8.0f} {task_us:>8.0f} "
              f"{low:>7.0f}-{high:<7.0f} {added[name]:>9.0f} {rate:>8.0f}")  # fmt: skip
    print("added µs: the task call's median minus the plain task's (celery-singleton also locks "
          "when sending)")  # fmt: skip
    for name, goal in GOALS.items():
        verdict = "met" if added[name] <= goal else "NOT met"
        print(f"{LABELS[name].strip()}: adds {added[name]:.0f} µs = {added[name] / goal:.2f} x "
              f"the goal of {goal:.0f} µs ({verdict})")  # fmt: skip
    print(f"SingletonTask, 1 master: {added['ours_1'] - added['floor_1']:.0f} µs over the floor "
          f"(the floor adds {added['floor_1']:.0f} µs)")  # fmt: skip
    extra = added["slot_3"] - added["ours_3"]
    print(f"slot headers add {extra:.0f} µs over the same task without them "
          f"(goal: no extra round trip, about 0)")  # fmt: skip
    report_drop(results)


def report_drop(results: dict[str, dict[str, Any]]) -> None:
    """What dropping a slot's second copy adds per message, in the worker's main process:
    the median over the rounds of the worker's time per message while draining."""
    names = ("plain_off", "plain", "plain_off_slot", "plain_slot")  # off, on; off, on
    per = {name: statistics.median(results[name]["drained"]) * 1e6 for name in names}
    print("\nsingleton_beat_drop_slot_copies: the worker's time per message while draining a "
          "plain task's queue (median of the rounds; the check runs before the pool, outside "
          "the task call)")  # fmt: skip
    print(f"{'variant':<31} {'µs/message':>10} {'rounds min-max':>15} {'tasks/s':>8}")
    for name in names:
        low, high = min(results[name]["drained"]) * 1e6, max(results[name]["drained"]) * 1e6
        print(f"{LABELS[name]:<31} {per[name]:>10.0f} {low:>7.0f}-{high:<7.0f} "
              f"{1e6 / per[name]:>8.0f}")  # fmt: skip
    print(f"drop on adds {per['plain'] - per['plain_off']:.0f} µs per message without slot "
          f"headers, {per['plain_slot'] - per['plain_off_slot']:.0f} µs per message of a slot "
          f"(its mark taken on 3 masters)")  # fmt: skip


if __name__ == "__main__":
    main()

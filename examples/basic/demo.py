"""Three beat replicas on three local Redis masters; one replica is killed halfway.

Starts three redis-server masters and a Redis broker on free ports, a worker and three
``celery beat -S singleton`` replicas of ``app.py``, and watches for about a minute.
Halfway it SIGKILLs the replica that dispatched last. Then it prints, per entry, the slots
expected in the observed window, how many were dispatched (from the replicas' logs) and
executed (from the worker), duplicates and missed ones, and exits 0 only when there are
no duplicates and nothing was missed. Every process it started is stopped.

    python examples/basic/demo.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from celery.schedules import crontab  # noqa: E402

from celery_singleton_beat.core.slots import CronSlots, IntervalSlots, slot_label  # noqa: E402
from celery_singleton_beat.testing import CeleryCluster, redis_servers, wait_for  # noqa: E402

ENTRIES = {
    "refresh-every-2s": IntervalSlots(2000),
    "report-every-5s": IntervalSlots(5000),
    "billing-every-minute": CronSlots(crontab(), dt.timezone.utc),
}
SENT = re.compile(r"Sending due task (\S+) \(.*\) for slot (\S+)")


def expected(slots: IntervalSlots | CronSlots, start: float, end: float) -> set[str]:
    found, t = set(), int(start * 1000)
    while (t := slots.next_after(t)) is not None and t <= end * 1000:  # type: ignore[assignment]
        found.add(slot_label(t))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with redis_servers(4) as servers, tempfile.TemporaryDirectory() as workdir:
        *masters, broker = servers
        urls = ",".join(m.url for m in masters)
        print(f"Redis masters: {', '.join(m.name for m in masters)}; broker {broker.name}")
        cluster = CeleryCluster(
            Path(workdir),
            "app",
            {"PYTHONPATH": f"{HERE}:{HERE.parent.parent}", "BROKER_URL": broker.url,
             "SINGLETON_BEAT_REDIS_URLS": urls},
        )  # fmt: skip
        try:
            cluster.start_worker()
            for i in (1, 2, 3):
                cluster.start_replica(f"replica-{i}")
            notes = redis.Redis.from_url(broker.url)
            wait_for(lambda: notes.llen("demo:executions") > 0, 30, "the first execution")
            start = time.time()
            print(f"3 beat replicas running; watching for {args.seconds:.0f} s")
            time.sleep(args.seconds / 2)
            last = json.loads(notes.lindex("demo:executions", -1) or b"{}")["replica"]
            victim = cluster.replica_of(last)
            cluster.kill(victim)
            print(f"SIGKILLed {victim.name} ({last}), the replica that dispatched last")
            time.sleep(args.seconds / 2)
            end = time.time() - 1.0
            time.sleep(1.5)
            rows = [json.loads(r) for r in notes.lrange("demo:executions", 0, -1)]
            sent = Counter(m.groups() for p in cluster.processes for m in SENT.finditer(p.text()))
        finally:
            cluster.stop()
    return report(rows, sent, start, end)


ROW = "{:<22} {:>8} {:>10} {:>8} {:>10} {:>6}"


def report(
    rows: list[dict[str, str]], sent: Counter[tuple[str, str]], start: float, end: float
) -> int:
    executed = Counter((r["entry"], r["slot"]) for r in rows)
    window = [time.strftime("%H:%M:%S", time.gmtime(t)) for t in (start, end)]
    print(f"\nwindow {window[0]} to {window[1]} UTC")
    print(ROW.format("entry", "expected", "dispatched", "executed", "duplicates", "missed"))
    failed = False
    for name, slots in ENTRIES.items():
        want = expected(slots, start, end)
        dispatched = sum(sent[(name, s)] for s in want)
        ran = sum(executed[(name, s)] for s in want)
        duplicates = sum(max(0, executed[(name, s)] - 1) for s in want)
        missed = sum(1 for s in want if executed[(name, s)] == 0)
        failed |= bool(duplicates or missed)
        print(ROW.format(name, len(want), dispatched, ran, duplicates, missed))
    if failed:
        print("\nFAILED: duplicates or missed slots")
        return 1
    print("\nOK: every slot dispatched and executed exactly once, through the replica kill")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``celery -A app singleton-beat …`` against a real cluster: 3 masters, 2 beat replicas."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_singleton_beat.core.schema import ran_lock
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.testing import (
    RedisClusterServers,
    RedisServer,
    free_port,
    sentinel_group,
    wait_for,
)
from tests.support.clusters import BeatCluster, beat_cluster

pytestmark = pytest.mark.slow

SCHEDULE = {
    "every-second": {"every": 1},
    "quarterly": {"cron": "*/15 * * * *"},
}


@pytest.fixture
def cluster(three_masters: list[RedisServer], tmp_path: Path) -> Iterator[BeatCluster]:
    with beat_cluster(tmp_path, three_masters, SCHEDULE) as running:
        running.start_worker()
        running.start_replica("r1")
        running.start_replica("r2")
        wait_for(lambda: len(running.executions()) >= 2, 30, "the replicas to dispatch")
        yield running


def cli(
    cluster: BeatCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.beat.app", "singleton-beat", *args],
        cwd=cluster.workdir, env=cluster.env(), capture_output=True, text=True, timeout=60,
        input=stdin, check=False,
    )  # fmt: skip


def test_status_lists_replicas_masters_and_entries_and_exits_0_when_healthy(
    cluster: BeatCluster,
) -> None:
    result = cli(cluster, "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["health"] == "healthy"
    assert [m["reachable"] for m in data["masters"]] == [True, True, True]
    assert all(m["version"] and m["latency_ms"] is not None for m in data["masters"])
    assert sorted(r["pid"] for r in data["replicas"]) == sorted(
        p.popen.pid for p in cluster.processes if p.name.startswith("r")
    )
    assert {r["mode"] for r in data["replicas"]} == {"active"}
    entries = {e["name"]: e for e in data["entries"]}
    assert entries["every-second"]["schedule"] == "every second"
    assert entries["every-second"]["dispatched"] >= 2
    assert entries["every-second"]["last_slot"].endswith(".000Z")
    assert entries["quarterly"]["schedule"] == "Every 15 minutes (*/15 * * * *)"
    assert entries["quarterly"]["last_slot"] is None, "nothing handled yet"
    text = cli(cluster, "status")
    assert "cluster: healthy" in text.stdout and "replicas (2):" in text.stdout


def test_status_exits_1_with_a_master_down_and_2_without_a_majority(cluster: BeatCluster) -> None:
    """Without a majority, status and locks say what they could not read: each entry's
    progress unknown (JSON null), not "none yet" and 0; the locks unread, not "none held"."""
    cluster.masters[0].kill()
    degraded = cli(cluster, "status", "--json")
    assert degraded.returncode == 1
    assert json.loads(degraded.stdout)["health"] == "degraded"
    cluster.masters[1].kill()
    lost = cli(cluster, "status")
    assert lost.returncode == 2
    assert "cluster: no quorum" in lost.stdout
    assert "DOWN" in lost.stdout
    assert "Traceback" not in lost.stderr
    (every,) = [line for line in lost.stdout.splitlines() if line.startswith("  every-second:")]
    assert every.startswith("  every-second: every second; next ")
    assert every.endswith(
        "; last slot, dispatched and skipped unknown (the store did not answer) (beat_schedule)"
    )
    entries = {e["name"]: e for e in json.loads(cli(cluster, "status", "--json").stdout)["entries"]}
    unknown = {k: entries["every-second"][k] for k in ("last_slot", "dispatched", "skipped")}
    assert unknown == {"last_slot": None, "dispatched": None, "skipped": None}

    locks = cli(cluster, "locks")
    assert locks.returncode == 2
    assert locks.stdout == "the locks of the beat masters could not be read\n"
    assert locks.stderr.startswith("beat masters: no majority of the beat masters answers; ")


def test_locks_lists_a_held_lock_and_unlock_needs_yes_when_not_interactive(
    cluster: BeatCluster,
) -> None:
    lock = Redlock.from_urls([m.url for m in cluster.masters], owner="billing-host/4242")
    lease = lock.acquire("task:billing", ttl=60)
    assert lease is not None
    listed = cli(cluster, "locks", "--json")
    assert listed.returncode == 0, listed.stderr
    (held,) = [row for row in json.loads(listed.stdout) if row["key"] == "task:billing"]
    assert (held["holder"], held["kind"], held["fence"]) == (
        "billing-host/4242",
        "task",
        lease.fence,
    )
    assert 50 < held["remaining"] <= 60
    assert lease.token not in listed.stdout, "a lock's token is never shown"

    refused = cli(cluster, "unlock", "task:billing", stdin="")
    assert refused.returncode != 0
    assert "refusing to force-release 'task:billing' without --yes" in refused.stderr
    assert lock.holder("task:billing") == lease.token

    released = cli(cluster, "unlock", "task:billing", "--yes")
    assert released.returncode == 0, released.stderr
    assert "released 'task:billing' on 3 of 3 reachable masters" in released.stdout
    assert lock.holder("task:billing") is None


def test_check_reports_an_evicting_policy_and_passes_when_fixed(cluster: BeatCluster) -> None:
    cluster.masters[1].client().config_set("maxmemory-policy", "allkeys-lru")
    bad = cli(cluster, "check")
    assert bad.returncode == 1
    assert f"{cluster.masters[1].name}: maxmemory-policy allkeys-lru can evict" in bad.stdout
    cluster.masters[1].client().config_set("maxmemory-policy", "noeviction")
    good = cli(cluster, "check")
    assert good.returncode == 0, good.stdout
    assert "WARN  " in good.stdout and "no AOF persistence" in good.stdout
    assert "entry 'quarterly': Every 15 minutes" in good.stdout


def test_check_reports_a_duplicated_master(cluster: BeatCluster) -> None:
    urls = [m.url for m in cluster.masters]
    env = cluster.env(TEST_MASTERS=",".join([*urls, urls[0].replace("/0", "/1")]))
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.beat.app", "singleton-beat", "check"],
        cwd=cluster.workdir, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{cluster.masters[0].name} is given twice" in result.stdout


def test_describe_puts_a_crontab_in_words_with_its_next_times(cluster: BeatCluster) -> None:
    result = cli(cluster, "describe", "0 9 * * mon-fri", "--count", "3", "--tz", "Europe/Berlin")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "At 09:00 AM, Monday through Friday (0 9 * * mon-fri)"
    assert len(lines) == 4
    assert all(line.strip().endswith(("+01:00", "+02:00")) for line in lines[1:])
    assert all("T09:00:00" in line for line in lines[1:])
    entry = cli(cluster, "describe", "quarterly", "--count", "2")
    assert "entry 'quarterly' runs task record" in entry.stdout
    assert "claim TTL 3.0s" in entry.stdout
    unknown = cli(cluster, "describe", "nightly")
    assert unknown.returncode != 0
    assert (
        "'nightly' is neither a scheduled entry (every-second, quarterly) nor a crontab "
        "expression of five fields"
    ) in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.fixture
def idle(three_masters: list[RedisServer], tmp_path: Path) -> Iterator[BeatCluster]:
    """Three masters and a broker, with no replica and no worker running."""
    with beat_cluster(tmp_path, three_masters, SCHEDULE) as stopped:
        yield stopped


def run_cli(cluster: BeatCluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.beat.app", "singleton-beat", *args],
        cwd=cluster.workdir, env=cluster.env(**env), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_status_without_a_live_replica_is_degraded_exits_1_and_prints_no_none(
    idle: BeatCluster,
) -> None:
    result = run_cli(idle, "status")
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "cluster: degraded",
        "  problem: no live beat replica: nothing is being scheduled",
    ]
    assert "replicas (0):" in lines
    assert "None" not in result.stdout
    assert "  every-second: every second; last none yet, next " in result.stdout
    data = json.loads(run_cli(idle, "status", "--json").stdout)
    assert (data["health"], data["problems"]) == (
        "degraded",
        ["no live beat replica: nothing is being scheduled"],
    )


def test_status_and_describe_know_runtime_entries(idle: BeatCluster) -> None:
    sources = idle.settings_env({"singleton_beat_schedule_source": ["beat_schedule", "runtime"]})
    added = run_cli(idle, "schedule", "add", "rt-every3", "record", "--every", "3",
                    "--args", '["rt-every3"]', **sources)  # fmt: skip
    assert added.returncode == 0, added.stderr

    status = run_cli(idle, "status", "--json", **sources)
    assert status.returncode == 1, status.stderr  # no live replica
    entries = {e["name"]: e for e in json.loads(status.stdout)["entries"]}
    assert sorted(entries) == ["every-second", "quarterly", "rt-every3"]
    runtime = entries["rt-every3"]
    assert (runtime["source"], runtime["task"], runtime["schedule"], runtime["paused"]) == (
        "runtime",
        "record",
        "every 3 seconds",
        False,
    )
    assert runtime["next_slot"].endswith(".000Z")
    assert entries["quarterly"]["source"] == "beat_schedule"

    described = run_cli(idle, "describe", "rt-every3", "--count", "2", **sources)
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    assert lines[:2] == ["entry 'rt-every3' runs task record (source runtime)", "every 3 seconds"]
    first, second = (dt.datetime.fromisoformat(line.strip()) for line in lines[2:4])
    assert (second - first).total_seconds() == 3
    for count in ("0", "-1"):
        refused = run_cli(idle, "describe", "rt-every3", "--count", count, **sources)
        assert refused.returncode == 2, refused.stdout
        assert f"Invalid value for '--count': {count} is not in the range x>=1." in refused.stderr


def test_a_backfill_from_the_future_is_refused_naming_from(idle: BeatCluster) -> None:
    future = run_cli(idle, "schedule", "backfill", "every-second", "--from", "2030-01-01T00:00:00Z")
    assert future.returncode == 1
    assert future.stderr.startswith("Error: --from = '2030-01-01T00:00:00")
    assert future.stderr.endswith(
        "is not valid: a time in the past; this one is in the future (beat sends those slots).\n"
    )


def test_unlock_of_a_key_nobody_holds_says_so_and_exits_1(idle: BeatCluster) -> None:
    result = run_cli(idle, "unlock", "task:nobody", "--yes")
    assert result.returncode == 1
    assert result.stdout == (
        "beat masters: 'task:nobody' was not held on any of the 3 reachable masters\n"
    )


def test_locks_filters_by_kind_limits_rows_and_aligns_columns(idle: BeatCluster) -> None:
    lock = Redlock.from_urls([m.url for m in idle.masters], owner="host-a/1")
    for n in range(7):
        assert lock.acquire(f"ran:nightly:{1_700_000_000_000 + n}", ttl=60) is not None
    long_key = "task:billing.charge:" + "ab" * 32
    assert lock.acquire(long_key, ttl=60) is not None
    assert lock.acquire("task:short", ttl=60) is not None

    tasks = run_cli(idle, "locks", "--kind", "task")
    assert tasks.returncode == 0, tasks.stderr
    lines = tasks.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["key", long_key, "task:short"]
    for column, value in (("kind", "task "), ("holder", "host-a/1"), ("store", "beat masters")):
        assert {line.index(value, len(long_key)) for line in lines[1:]} == {
            lines[0].index(column)
        }, column

    ran = run_cli(idle, "locks", "--kind", "ran", "--limit", "5")
    lines = ran.stdout.splitlines()
    assert len(lines) == 7
    assert [line.split()[0] for line in lines[1:6]] == [
        f"ran:nightly:{1_700_000_000_000 + n}" for n in range(5)
    ]
    assert lines[6] == "... 2 more (--limit 0 shows all; --kind filters)"
    assert len(json.loads(run_cli(idle, "locks", "--kind", "ran", "--json").stdout)) == 7


def test_check_reports_every_problem_at_once_and_exits_1(idle: BeatCluster) -> None:
    settings = {
        "singleton_beat_mode": "both",
        "singleton_beat_claim_ttl": -1,
        "singleton_beat_task_on_conflict": "wait",
    }
    result = run_cli(idle, "check", **idle.settings_env(settings))
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert errors == [
        "ERROR singleton_beat_mode = 'both' is not valid: 'active' (every replica evaluates) "
        "or 'leader'.",
        "ERROR singleton_beat_claim_ttl = -1 is not valid: a positive number of seconds.",
        "ERROR singleton_beat_task_on_conflict = 'wait' is not valid: one of 'skip', 'retry', "
        "'raise'.",
    ]
    assert "Traceback" not in result.stderr


def test_check_refuses_a_misspelt_setting_and_warns_of_the_broker_once(idle: BeatCluster) -> None:
    assert idle.broker is not None
    settings = {
        "singleton_beat_redis_urls": None,  # beat would take the Redis broker for its master
        "singleton_beat_redis_url": [m.url for m in idle.masters],
        "singleton_beat_misfire_grase": 60,
    }
    result = run_cli(idle, "check", TEST_BROKER_URL=idle.broker.url, **idle.settings_env(settings))
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert errors == [
        "ERROR singleton_beat_misfire_grase is not a celery-singleton-beat setting (nothing "
        "reads it): did you mean 'singleton_beat_misfire_grace'?",
        "ERROR singleton_beat_redis_url is not a celery-singleton-beat setting (nothing reads "
        "it): did you mean 'singleton_beat_redis_urls'?",
    ]
    assert "settings valid" not in result.stdout
    assert result.stderr.count("singleton_beat_redis_urls is not set: using the broker") <= 1


def test_check_audits_masters_and_every_source_past_a_misspelt_or_bad_setting(
    idle: BeatCluster, with_runtime_entry: dict[str, str]
) -> None:
    settings = {**RUNTIME, "singleton_beat_misfire_grase": 60, "singleton_beat_mode": "both"}
    dead = f"redis://127.0.0.1:{free_port()}/0"
    urls = ",".join([*(m.url for m in idle.masters[:2]), dead])
    result = run_cli(idle, "check", TEST_MASTERS=urls, **idle.settings_env(settings))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    assert errors[:2] == [
        "ERROR singleton_beat_misfire_grase is not a celery-singleton-beat setting (nothing "
        "reads it): did you mean 'singleton_beat_misfire_grace'?",
        "ERROR singleton_beat_mode = 'both' is not valid: 'active' (every replica evaluates) "
        "or 'leader'.",
    ]
    assert errors[2].startswith(f"ERROR 127.0.0.1:{dead.split(':')[2][:-2]}: unreachable (")
    assert len(errors) == 3, errors
    assert (
        "WARN  the rest is checked with each refused setting at its default (3 masters, "
        "mode active)" in lines
    )
    assert "settings valid" not in result.stdout
    assert [line for line in lines if " entry " in line] == [
        "OK    entry 'every-second': every second",
        "OK    entry 'quarterly': Every 15 minutes (*/15 * * * *)",
        "OK    entry 'rt' (runtime): every 5 seconds",
    ]


def test_db_upgrade_without_the_sqlalchemy_extra_names_it_in_one_line(
    idle: BeatCluster, tmp_path: Path
) -> None:
    absent = tmp_path / "without-sqlalchemy"
    absent.mkdir()
    (absent / "sqlalchemy.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'sqlalchemy'\", name='sqlalchemy')\n"
    )
    paths = os.pathsep.join([str(absent), idle.env()["PYTHONPATH"]])
    result = run_cli(idle, "db", "upgrade", PYTHONPATH=paths)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "Error: the tables are the SQLAlchemy store's, which needs the [sqlalchemy] extra: "
        "pip install 'celery-singleton-beat[sqlalchemy]' (the Redis store needs no tables)\n"
    )


def test_check_warns_that_two_masters_survive_no_failure(idle: BeatCluster) -> None:
    urls = ",".join(m.url for m in idle.masters[:2])
    result = run_cli(idle, "check", TEST_MASTERS=urls)
    assert result.returncode == 0, result.stdout
    assert (
        "WARN  2 masters: a majority is 2, so they survive 0 failures, no more than 1 would; "
        "use an odd number (3 or 5)"
    ) in result.stdout.splitlines()


def test_check_refuses_one_server_listed_under_two_addresses(idle: BeatCluster) -> None:
    first = idle.masters[0]
    alias = f"redis://localhost:{first.port}/1"
    urls = ",".join([first.url, alias, idle.masters[1].url])
    result = run_cli(idle, "check", TEST_MASTERS=urls)
    assert result.returncode == 1
    run_id = first.client().info("server")["run_id"]
    assert (
        f"ERROR 127.0.0.1:{first.port} and localhost:{first.port} are one Redis server "
        f"(run_id {run_id}): it would cast 2 votes; list each master once"
    ) in result.stdout.splitlines()


def test_check_refuses_an_entry_naming_an_unregistered_task(idle: BeatCluster) -> None:
    schedule = json.dumps({"typo": {"every": 5, "task": "reocrd"}})
    result = run_cli(idle, "check", TEST_SCHEDULE=schedule)
    assert result.returncode == 1
    assert (
        "ERROR entry 'typo': task 'reocrd' is not registered in this app; workers would "
        "discard its messages (check the name, and that its module is imported: imports, "
        "include or autodiscover_tasks)"
    ) in result.stdout.splitlines()


def test_check_warns_when_beat_scheduler_is_not_this_librarys(idle: BeatCluster) -> None:
    settings = {"beat_scheduler": "celery.beat:PersistentScheduler"}
    result = run_cli(idle, "check", **idle.settings_env(settings))
    assert (
        "WARN  beat_scheduler = 'celery.beat:PersistentScheduler': `celery beat` runs that "
        "scheduler, with no fences, on every replica (each slot sent once per replica) "
        "unless started with `-S singleton`; set beat_scheduler = "
        "'celery_singleton_beat.Scheduler'"
    ) in result.stdout.splitlines()
    ours = run_cli(idle, "check")
    assert "OK    beat_scheduler = 'celery_singleton_beat.Scheduler'" in ours.stdout


def test_check_without_the_config_command_warns_instead_of_a_traceback(
    idle: BeatCluster,
) -> None:
    managed = RedisServer(extra_args=("--rename-command", "CONFIG", "")).start()
    try:
        urls = ",".join([managed.url, *(m.url for m in idle.masters[1:])])
        result = run_cli(idle, "check", TEST_MASTERS=urls)
    finally:
        managed.stop()
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"WARN  {managed.name}"))
    assert line.startswith(f"WARN  {managed.name}: CONFIG is not available (unknown command")
    assert line.endswith("make sure with your provider that maxmemory-policy is noeviction")


RUNTIME = {"singleton_beat_schedule_source": ["beat_schedule", "runtime"]}


def runtime_schedule(cluster: BeatCluster) -> dict[str, Any]:
    """``schedule list --json``: the runtime entries and the paused names."""
    listed = run_cli(cluster, "schedule", "list", "--json", **cluster.settings_env(RUNTIME))
    found: dict[str, Any] = json.loads(listed.stdout)
    return found


def test_schedule_add_of_a_name_another_source_gives_is_refused_and_writes_nothing(
    idle: BeatCluster,
) -> None:
    env = idle.settings_env(RUNTIME)
    taken = run_cli(idle, "schedule", "add", "every-second", "record", "--every", "5", **env)
    assert taken.returncode == 1
    assert taken.stderr == (
        "Error: name = 'every-second' is not valid: a name no other schedule source gives "
        "('every-second' is an entry of 'beat_schedule': change it there, or choose another "
        "name).\n"
    )
    assert runtime_schedule(idle) == {"entries": {}, "paused": {}}
    listed = run_cli(idle, "schedule", "list", **env)
    assert (listed.returncode, listed.stdout) == (0, "no runtime entries, and nothing paused\n")


def test_schedule_add_of_a_task_this_app_does_not_register_is_refused_and_writes_nothing(
    idle: BeatCluster,
) -> None:
    env = idle.settings_env(RUNTIME)
    unknown = run_cli(idle, "schedule", "add", "ok1", "app.nope", "--every", "5", **env)
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "Error: task = 'app.nope' is not valid: the name of a task registered in this app "
        "(check the name, and that its module is imported: imports, include or "
        "autodiscover_tasks).\n"
    )
    typo = run_cli(idle, "schedule", "add", "ok1", "reocrd", "--every", "5", **env)
    assert typo.stderr == (
        "Error: task = 'reocrd' is not valid: the name of a task registered in this app (did "
        "you mean 'record'?).\n"
    )
    assert runtime_schedule(idle) == {"entries": {}, "paused": {}}
    added = run_cli(
        idle, "schedule", "add", "ok1", "record", "--every", "5", "--args", "[1]", **env
    )
    assert (added.returncode, added.stdout) == (0, "added 'ok1'\n"), added.stderr


def test_schedule_add_with_arguments_the_task_does_not_take_is_refused_and_writes_nothing(
    idle: BeatCluster,
) -> None:
    env = idle.settings_env(RUNTIME)
    bare = run_cli(idle, "schedule", "add", "ok1", "record", "--every", "5", **env)
    assert bare.returncode == 1
    assert bare.stderr == (
        "Error: args/kwargs = ([], {}) is not valid: arguments task 'record' takes (record() "
        "missing 1 required positional argument: 'entry').\n"
    )
    extra = run_cli(idle, "schedule", "add", "ok1", "record", "--every", "5", "--kwargs",
                    '{"entry": "ok1", "colour": "red"}', **env)  # fmt: skip
    assert extra.stderr == (
        "Error: args/kwargs = ([], {'entry': 'ok1', 'colour': 'red'}) is not valid: arguments "
        "task 'record' takes (record() got an unexpected keyword argument 'colour').\n"
    )
    assert runtime_schedule(idle) == {"entries": {}, "paused": {}}


def test_schedule_add_keeps_the_policies_given_and_refuses_a_bad_one_naming_it(
    idle: BeatCluster,
) -> None:
    env = idle.settings_env(RUNTIME)
    policies = [
        "--start-time",
        "2026-12-24T18:00:00+01:00",
        "--end-time",
        "2027-01-06T00:00:00Z",
        "--jitter",
        "5",
        "--slot-kwarg",
        "scheduled_at",
        "--pause-on-failure",
        "3",
    ]
    bad = run_cli(idle, "schedule", "add", "ok1", "record_slot", "--every", "60", "--args",
                  '["ok1"]', *policies[:-1], "-1", **env)  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr == (
        "Error: pause_on_failure = -1 is not valid: a whole number of consecutive failed "
        "runs, 0 (default: never pause) or more.\n"
    )
    taken = run_cli(idle, "schedule", "add", "ok1", "record", "--every", "60", "--args",
                    '["ok1"]', *policies, **env)  # fmt: skip
    assert taken.stderr == (
        "Error: slot_kwarg = 'scheduled_at' is not valid: a keyword argument task 'record' "
        "takes (record() got an unexpected keyword argument 'scheduled_at').\n"
    )
    added = run_cli(idle, "schedule", "add", "ok1", "record_slot", "--every", "60", "--args",
                    '["ok1"]', *policies, **env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    stored = runtime_schedule(idle)["entries"]["ok1"]
    assert {k: stored[k] for k in ("start_time", "end_time", "jitter", "slot_kwarg")} == {
        "start_time": "2026-12-24T18:00:00+01:00", "end_time": "2027-01-06T00:00:00Z",
        "jitter": 5.0, "slot_kwarg": "scheduled_at",
    }  # fmt: skip
    assert stored["pause_on_failure"] == 3


@pytest.fixture
def with_runtime_entry(idle: BeatCluster) -> dict[str, str]:
    """A runtime entry ``rt`` added beside ``beat_schedule``'s; the environment of both."""
    env = idle.settings_env(RUNTIME)
    added = run_cli(idle, "schedule", "add", "rt", "record", "--every", "5", "--args", "[1]", **env)
    assert added.returncode == 0, added.stderr
    return env


def test_schedule_pause_and_resume_of_a_name_no_source_gives_fail_naming_the_known_entries(
    idle: BeatCluster, with_runtime_entry: dict[str, str]
) -> None:
    env = with_runtime_entry
    for command in ("pause", "resume"):
        unknown = run_cli(idle, "schedule", command, "nosuch", **env)
        assert unknown.returncode == 1
        assert unknown.stderr == (
            "Error: name = 'nosuch' is not valid: the name of an entry of a schedule source, "
            "one of 'every-second', 'quarterly', 'rt'.\n"
        )
    assert runtime_schedule(idle)["paused"] == {}


def test_schedule_pause_takes_an_entry_of_every_source_and_resume_one_its_source_dropped(
    idle: BeatCluster, with_runtime_entry: dict[str, str]
) -> None:
    env = with_runtime_entry
    for name in ("every-second", "rt"):
        paused = run_cli(idle, "schedule", "pause", name, **env)
        assert (paused.returncode, paused.stdout) == (0, f"paused {name!r}\n"), paused.stderr
    # a deploy removed every-second from beat_schedule while it was paused
    dropped = json.dumps({"quarterly": {"cron": "*/15 * * * *"}})
    resumed = run_cli(idle, "schedule", "resume", "every-second", TEST_SCHEDULE=dropped, **env)
    assert (resumed.returncode, resumed.stdout) == (0, "resumed 'every-second'\n"), resumed.stderr
    assert sorted(runtime_schedule(idle)["paused"]) == ["rt"]


def test_check_reports_an_entry_two_sources_give_naming_both_and_exits_1(
    idle: BeatCluster,
) -> None:
    assert idle.broker is not None
    redis.Redis.from_url(idle.broker.url).set("schedule", json.dumps({"quarterly": {"every": 5}}))
    sources = {"singleton_beat_schedule_source": ["beat_schedule", "tests.beat.app.RedisSource"]}
    result = run_cli(idle, "check", **idle.settings_env(sources))
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert errors == [
        "ERROR entry 'quarterly' is given by both 'beat_schedule' and 'test-redis' "
        "(singleton_beat_schedule_source): beat leaves the copy of 'test-redis' out, "
        "'beat_schedule' is listed first; rename or remove one of them"
    ]


@pytest.fixture
def on_redis_cluster(sharded_cluster: RedisClusterServers, tmp_path: Path) -> Iterator[BeatCluster]:
    """Two beat replicas and a worker on a Redis Cluster (3 primaries, a replica each)."""
    with beat_cluster(tmp_path, [sharded_cluster], SCHEDULE) as running:
        running.start_worker()
        running.start_replica("r1")
        running.start_replica("r2")
        wait_for(lambda: len(running.executions()) >= 2, 30, "the replicas to dispatch")
        yield running


def test_status_locks_unlock_and_check_read_a_redis_cluster(on_redis_cluster: BeatCluster) -> None:
    (sharded,) = on_redis_cluster.masters
    status = json.loads(cli(on_redis_cluster, "status", "--json").stdout)
    assert (status["health"], status["problems"]) == ("healthy", [])
    assert [(m["name"], m["reachable"]) for m in status["masters"]] == [
        (f"{sharded.nodes[0].name} (cluster)", True)
    ]
    assert sorted(r["pid"] for r in status["replicas"]) == sorted(
        p.popen.pid for p in on_redis_cluster.processes if p.name.startswith("r")
    )
    assert all(r["seen_ago"] is not None for r in status["replicas"])
    entries = {e["name"]: e for e in status["entries"]}
    assert entries["every-second"]["dispatched"] >= 2

    lock = Redlock.from_urls([sharded.url], owner="billing-host/4242")
    lease = lock.acquire("task:billing", ttl=60)
    assert lease is not None
    ran = ran_lock("every-second", "2026-01-01T00:00:00.000Z")
    assert lock.acquire(ran, ttl=60) is not None
    rows = json.loads(cli(on_redis_cluster, "locks", "--json").stdout)
    # the worker marks each slot it runs ("ran", held by its own host): only ours here
    assert sorted(
        (row["key"], row["kind"], row["holder"])
        for row in rows
        if row["holder"] == "billing-host/4242"
    ) == [(ran, "slot ran", "billing-host/4242"), ("task:billing", "task", "billing-host/4242")]
    (held,) = [row for row in rows if row["key"] == "task:billing"]
    assert held["fence"] == lease.fence
    released = cli(on_redis_cluster, "unlock", "task:billing", "--yes")
    assert released.returncode == 0, released.stderr
    assert "released 'task:billing' on 1 of 1 reachable masters" in released.stdout
    assert lock.holder("task:billing") is None

    check = cli(on_redis_cluster, "check")
    assert check.returncode == 0, check.stdout
    assert "one master" not in check.stdout
    assert "has no replica" not in check.stdout
    assert (
        f"OK    one Redis Cluster ({sharded.nodes[0].name} (cluster)): beat follows each "
        f"primary's failover, and a write counts once its shard's replicas acknowledged it "
        f"(singleton_beat_redis_min_replicas = 'auto')"
    ) in check.stdout.splitlines()
    assert (
        f"OK    {sharded.nodes[0].name} (cluster): a Redis Cluster of 3 primaries; a primary "
        f"lost is replaced by its replica"
    ) in check.stdout.splitlines()
    victim = sharded.primary_of("any")
    replica = sharded.node(sharded.topology()[victim.name][0])
    replica.kill()
    sharded.wait_until_stable()
    alone = cli(on_redis_cluster, "check")
    assert (
        f"WARN  {sharded.nodes[0].name} (cluster): {victim.name} has no replica: losing it "
        f"stops the cluster until it is back"
    ) in alone.stdout.splitlines()


def test_check_and_status_follow_a_sentinel_broker(tmp_path: Path) -> None:
    """A Sentinel broker and no singleton_beat_redis_urls: its transport options are read,
    the primary the Sentinels name is probed, and a failover is no warning."""
    with sentinel_group() as group, beat_cluster(tmp_path, [], SCHEDULE) as cluster:
        settings = {
            "broker_transport_options": group.transport_options,
            "singleton_beat_redis_urls": None,  # the broker's
        }
        env = {"TEST_BROKER_URL": group.url, "TEST_SETTINGS": json.dumps(settings)}
        checked = run_cli(cluster, "check", **env)
        status = run_cli(cluster, "status", **env)
    ports = sorted(s.port for s in group.sentinels)
    name = "mymaster@" + ",".join(f"127.0.0.1:{port}" for port in ports)
    assert (
        f"OK    one Sentinel-managed primary ({name}): beat follows its failover, and a write "
        f"counts once its replicas acknowledged it (singleton_beat_redis_min_replicas = 'auto')"
    ) in checked.stdout.splitlines(), checked.stdout + checked.stderr
    assert not [line for line in checked.stdout.splitlines() if line.startswith("ERROR")]
    assert f"  {name} up" in status.stdout, status.stdout + status.stderr


def test_check_audits_the_entries_of_every_source_not_only_beat_schedule(
    idle: BeatCluster, with_runtime_entry: dict[str, str]
) -> None:
    assert idle.broker is not None
    table = json.dumps({"typo": {"every": 5, "task": "reocrd"}})
    redis.Redis.from_url(idle.broker.url).set("schedule", table)
    sources = ["beat_schedule", "tests.beat.app.RedisSource", "runtime"]
    env = idle.settings_env({"singleton_beat_schedule_source": sources})
    result = run_cli(idle, "check", **env)
    assert result.returncode == 1, result.stdout
    entries = [line for line in result.stdout.splitlines() if " entry " in line]
    assert entries == [
        "OK    entry 'every-second': every second",
        "OK    entry 'quarterly': Every 15 minutes (*/15 * * * *)",
        "OK    entry 'rt' (runtime): every 5 seconds",
        "ERROR entry 'typo' (test-redis): task 'reocrd' is not registered in this app; workers "
        "would discard its messages (check the name, and that its module is imported: "
        "imports, include or autodiscover_tasks)",
    ]


def test_status_shows_how_far_a_replica_reading_its_entries_got() -> None:
    from celery_singleton_beat.ops.cli import _status_text

    replica = {"host": "beat-1", "pid": 7, "mode": "active", "role": "active", "seen_ago": 0.4}
    data = {
        "health": "healthy", "problems": [], "store": "3 Redis master(s)", "masters": [],
        "replicas": [{**replica, "entries": 100_000, "initialised": 40_000}],
        "entries": [],
    }  # fmt: skip
    assert (
        "  beat-1:7        active  active   heartbeat 0.4s ago; initialised 40,000 of "
        "100,000 entries" in _status_text(data).splitlines()
    )


def test_schedule_add_suggests_a_task_only_when_the_part_that_differs_is_close() -> None:
    from celery_singleton_beat.schedule.api import closest_task

    tasks = ["proj.tasks.greet", "proj.tasks.refresh_rates", "proj.tasks.bill", "record"]
    assert closest_task("proj.tasks.gret", tasks) == "proj.tasks.greet"
    assert closest_task("proj.tasks.nothing_like_it", tasks) is None
    assert closest_task("totally.unrelated", tasks) is None
    assert closest_task("reocrd", tasks) == "record"
    assert closest_task("shop.tasks.pnig", ["shop.tasks.ping", "shop.tasks.report"]) == (
        "shop.tasks.ping"
    )

"""What a beat replica says about an entry it cannot send as written: a task it does not
know (one warning per entry, at start or when the entry appears), a bad per-entry option
(one line, and the traceback only at DEBUG)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from celery_singleton_beat.testing import Process, RedisServer, wait_for
from tests.support.clusters import beat_cluster

pytestmark = pytest.mark.slow

UNREGISTERED = (
    "WARNING/MainProcess] singleton beat: entry {entry!r} sends task {task!r}, which is not "
    "registered in this app: workers that do not register it either discard its messages "
    "(check the name, and that its module is imported: imports, include or autodiscover_tasks)"
)
BAD_OPTION = (
    "CRITICAL/MainProcess] singleton beat cannot start: "
    "beat_schedule['tick']['options']['singleton_beat']['misfire'] = 'nope' is not valid: "
    "'coalesce' (default) or 'skip'."
)


def log_lines(replica: Process) -> list[str]:
    """The replica's log records (the banner left out), without their time stamps."""
    found = replica.text().splitlines()
    return [line.partition(": ")[2] for line in found if line.startswith("[20")]


def test_an_entry_of_an_unregistered_task_is_warned_of_once_at_start_and_once_when_it_appears(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    settings = {"singleton_beat_schedule_source": ["beat_schedule", "tests.beat.app.RedisSource"]}
    ghost = {"ghost": {"every": 1, "task": "nope"}, "tick": {"every": 1}}
    with beat_cluster(tmp_path, three_masters, ghost, **settings) as cluster:
        replica = cluster.start_replica("r1")
        wait_for(lambda: "entries loaded" in replica.text(), 30, "the replica running")
        cluster.edit_source({"later": {"every": 1, "task": "nope.later"}})
        wait_for(lambda: "1 added" in replica.text(), 10, "the entry added")
        cluster.edit_source({"later": {"every": 2, "task": "nope.later"}})
        wait_for(lambda: "1 changed" in replica.text(), 10, "the entry changed")
        time.sleep(2.5)  # more slots of both, more polls
        found = log_lines(replica)

    warned = [line for line in found if line.startswith("WARNING")]
    assert warned == [
        UNREGISTERED.format(entry="ghost", task="nope"),
        UNREGISTERED.format(entry="later", task="nope.later"),
    ]
    assert found.index(warned[0]) < found.index(
        next(line for line in found if "entries loaded" in line)
    ), "warned at start"


def test_a_bad_per_entry_option_stops_beat_with_one_line_and_the_traceback_only_at_debug(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    bad = {"tick": {"every": 1, "options": {"singleton_beat": {"misfire": "nope"}}}}
    with beat_cluster(tmp_path, three_masters, bad) as cluster:
        info = cluster.start_replica("info")
        debug = cluster.start_replica("debug", loglevel="DEBUG")
        assert info.popen.wait(30) == 1
        assert debug.popen.wait(30) == 1

    assert log_lines(info) == ["INFO/MainProcess] beat: Starting...", BAD_OPTION]
    assert "Traceback" not in info.text()
    records = log_lines(debug)
    assert [line for line in records if not line.startswith("DEBUG")] == [
        "INFO/MainProcess] beat: Starting...",
        BAD_OPTION,
    ]
    assert debug.text().count("Traceback (most recent call last)") == 1
    error = BAD_OPTION.partition("cannot start: ")[2]
    assert f"\ncelery_singleton_beat.errors.ConfigurationError: {error}\n" in debug.text()


def test_a_misspelt_setting_stops_beat_with_one_line_and_the_traceback_only_at_debug(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    typo = {"singleton_beat_misfire_grase": 10}
    with beat_cluster(tmp_path, three_masters, {"tick": {"every": 1}}, **typo) as cluster:
        info = cluster.start_replica("info")
        debug = cluster.start_replica("debug", loglevel="DEBUG")
        assert info.popen.wait(30) == 1
        assert debug.popen.wait(30) == 1

    refused = (
        "CRITICAL/MainProcess] singleton beat cannot start: singleton_beat_misfire_grase is "
        "not a celery-singleton-beat setting (nothing reads it): did you mean "
        "'singleton_beat_misfire_grace'?"
    )
    assert log_lines(info) == ["INFO/MainProcess] beat: Starting...", refused]
    assert "Traceback" not in info.text()
    assert "    . singleton beat -> cannot start (the error follows)" in info.text()
    assert [line for line in log_lines(debug) if not line.startswith("DEBUG")] == [
        "INFO/MainProcess] beat: Starting...",
        refused,
    ]
    assert debug.text().count("Traceback (most recent call last)") == 1

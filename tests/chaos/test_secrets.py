"""A password with the characters generated secrets hold (``/``, ``#``, ``?``) never shows:
not in a refused setting, not in ``singleton-beat check``, not at beat start-up, not in
the beat banner."""

from __future__ import annotations

import logging
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.settings.config import Config, TaskConfig
from celery_singleton_beat.testing import CeleryCluster, RedisServer, wait_for

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2/q#r?s"
PIECES = (PASSWORD, "hunter2", "q#r", "r?s", "/q#", "hunter2%2F")
RAW = f"redis://:{PASSWORD}@127.0.0.1:6390/0"
ENCODE = (
    "a redis:// or rediss:// URL such as redis://[user:password@]host:6379/0, or one node "
    "of a Redis Cluster with ?cluster=true (redis://host:6379?cluster=true), with a "
    "password holding / # ? @ or % percent-encoded (urllib.parse.quote(password, safe=''))"
)
REFUSED = {
    "list": f"singleton_beat_redis_urls = 'redis://***@127.0.0.1:6390/0' is not valid: {ENCODE}.",
    "str": f"singleton_beat_redis_urls = 'redis://***@127.0.0.1:6390/0' is not valid: {ENCODE}.",
    "set": "singleton_beat_redis_urls = {'redis://***@127.0.0.1:6390/0'} is not valid: a list "
    "of redis:// URLs or one comma-separated string (not a set, which has no order: every "
    "replica must list the masters alike).",
    "broker": "broker_url (the lock master while singleton_beat_redis_urls is unset) = "
    f"'redis://***@127.0.0.1:6390/0' is not valid: {ENCODE}.",
}


def conf(form: str) -> dict[str, Any]:
    if form == "broker":
        return {"broker_url": RAW}
    return {"singleton_beat_redis_urls": {"list": [RAW], "str": RAW, "set": {RAW}}[form]}


def assert_hidden(text: str) -> None:
    leaked = [piece for piece in PIECES if piece in text]
    assert leaked == [], f"password pieces {leaked} in:\n{text}"


def chain(exc: BaseException) -> str:
    """The exception with every exception chained to it, shown or not."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append("".join(traceback.format_exception(seen)) + repr(seen.args))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("form", ["list", "str", "set", "broker"])
@pytest.mark.parametrize("config_class", [Config, TaskConfig])
def test_a_refused_url_names_the_setting_and_hides_the_password(
    form: str, config_class: type[Config] | type[TaskConfig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigurationError) as raised:
        config_class.from_conf(conf(form))
    assert str(raised.value) == REFUSED[form]
    assert_hidden(chain(raised.value))
    assert_hidden("\n".join(record.getMessage() for record in caplog.records))


def run(args: list[str], form: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**CeleryCluster(ROOT, "").env(), "PYTHONPATH": str(ROOT), **env}
    environment.update(TEST_URL=RAW, TEST_URL_FORM=form)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.chaos.secret_app", *args],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


#: What ``check`` says after a refused Redis URL: nothing is left to reach the store by.
UNCHECKED = (
    "WARN  the store, its masters and the schedule sources other than beat_schedule are not "
    "checked until the store's settings are valid"
)


@pytest.mark.parametrize("form", ["list", "str", "set", "broker"])
def test_singleton_beat_check_reports_the_url_without_its_password(form: str) -> None:
    result = run(["singleton-beat", "check"], form)
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if not line.startswith("OK ")]
    assert errors == [f"ERROR {REFUSED[form]}", UNCHECKED]
    assert_hidden(result.stdout + result.stderr)


@pytest.mark.parametrize("form", ["list", "str", "set", "broker"])
def test_beat_start_up_refuses_the_url_without_printing_its_password(
    form: str, tmp_path: Path
) -> None:
    broker = RedisServer().start()
    try:
        result = run(
            ["beat", "-S", "singleton", "--pidfile=", "-s", str(tmp_path / "beat.db")], form,
            TEST_BROKER_URL=broker.url,
        )  # fmt: skip
    finally:
        broker.stop()
    assert result.returncode != 0
    assert REFUSED[form] in result.stdout + result.stderr
    assert_hidden(result.stdout + result.stderr)


def test_the_beat_banner_hides_a_password_given_in_the_query_string(tmp_path: Path) -> None:
    master = RedisServer(password=PASSWORD).start()
    broker = RedisServer().start()
    url = f"redis://127.0.0.1:{master.port}/0?password=hunter2%2Fq%23r%3Fs"
    cluster = CeleryCluster(
        tmp_path, "tests.chaos.secret_app",
        base_env={"PYTHONPATH": str(ROOT), "TEST_URL": url, "TEST_BROKER_URL": broker.url},
    )  # fmt: skip
    try:
        beat = cluster.start_replica("beat")
        wait_for(lambda: "entries loaded" in beat.text(), 30, f"beat to start\n{beat.text()}")
        assert master.client().keys("singleton-beat:replica:*"), "beat uses the master"
    finally:
        cluster.stop()
        master.stop()
        broker.stop()
    assert f"lock masters -> redis://127.0.0.1:{master.port}/0?password=*** " in beat.text()
    assert_hidden(beat.text())

"""Settings that nothing reads are reported by Django's system checks, with the name meant,
and refused by beat, workers and the CLI; every bad Celery setting is named as the user
writes it in Django's settings, wherever it is found bad."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.core import checks

from celery_singleton_beat.errors import ConfigurationError, UnknownSetting
from celery_singleton_beat.settings.config import APP_SETTINGS, Config, TaskConfig
from django_celery_singleton_beat.conf import AppSettings
from tests.djangoapp.project import demo_env, with_settings


def warnings() -> list[tuple[str, str]]:
    return [
        (str(m.msg), str(m.hint))
        for m in checks.run_checks(tags=[checks.Tags.compatibility])
        if m.id == "singleton_beat.W001"
    ]


def test_a_django_setting_written_in_the_celery_namespace_is_reported(
    settings: Any,
) -> None:
    settings.CELERY_SINGLETON_BEAT_RETENTION = "30d"
    assert warnings() == [
        (
            "CELERY_SINGLETON_BEAT_RETENTION is not a celery-singleton-beat setting: beat, "
            "its workers and `celery singleton-beat` refuse to start.",
            "Did you mean SINGLETON_BEAT_RETENTION? The Django app's own settings are "
            "SINGLETON_BEAT_* (no CELERY_ prefix); only the Celery settings are "
            "CELERY_SINGLETON_BEAT_*.",
        )
    ]


def test_a_misspelt_setting_is_reported_with_the_name_meant(settings: Any) -> None:
    settings.SINGLETON_BEAT_RETENTON = "30d"
    settings.CELERY_SINGLETON_BEAT_REDIS_URL = ["redis://a:6379/0"]
    assert warnings() == [
        (
            "CELERY_SINGLETON_BEAT_REDIS_URL is not a celery-singleton-beat setting: beat, "
            "its workers and `celery singleton-beat` refuse to start.",
            "Did you mean CELERY_SINGLETON_BEAT_REDIS_URLS?",
        ),
        (
            "SINGLETON_BEAT_RETENTON is not a celery-singleton-beat setting: it is ignored.",
            "Did you mean SINGLETON_BEAT_RETENTION?",
        ),
    ]


def test_a_celery_setting_written_without_the_namespace_is_reported(
    settings: Any,
) -> None:
    settings.SINGLETON_BEAT_CLAIM_TTL = 5
    ((message, hint),) = warnings()
    assert (
        message == "SINGLETON_BEAT_CLAIM_TTL is not a celery-singleton-beat setting: it is ignored."
    )
    assert hint.startswith("Did you mean CELERY_SINGLETON_BEAT_CLAIM_TTL? Celery settings")


def test_known_settings_give_no_warning(settings: Any) -> None:
    settings.SINGLETON_BEAT_RETENTION = "30d"
    settings.CELERY_SINGLETON_BEAT_REDIS_URLS = ["redis://a:6379/0"]
    settings.CELERY_SINGLETON_BEAT_TASK_TTL = 30
    assert warnings() == []


def django_celery_app() -> Celery:
    app = Celery("proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    return app


@pytest.mark.parametrize("config", [Config, TaskConfig])
def test_a_missing_redis_urls_names_the_django_setting(
    config: type[Config] | type[TaskConfig], settings: Any
) -> None:
    settings.CELERY_BROKER_URL = "amqp://guest@localhost//"
    with pytest.raises(ConfigurationError) as raised:
        config.from_conf(django_celery_app().conf)
    assert raised.value.name == "CELERY_SINGLETON_BEAT_REDIS_URLS"
    assert str(raised.value).startswith("CELERY_SINGLETON_BEAT_REDIS_URLS = None is not valid")


def test_a_bad_value_names_the_django_setting(settings: Any) -> None:
    settings.CELERY_SINGLETON_BEAT_REDIS_URLS = ["redis://a:6379/0"]
    settings.CELERY_SINGLETON_BEAT_MODE = "both"
    with pytest.raises(ConfigurationError) as raised:
        Config.from_conf(django_celery_app().conf)
    assert raised.value.name == "CELERY_SINGLETON_BEAT_MODE"


def test_an_error_names_every_setting_as_written(settings: Any) -> None:
    settings.CELERY_SINGLETON_BEAT_REDIS_URLS = ["redis://a:6379/0"]
    settings.CELERY_SINGLETON_BEAT_CLAIM_TTL = 100
    settings.CELERY_SINGLETON_BEAT_FENCE_RETENTION = 60
    with pytest.raises(ConfigurationError) as raised:
        Config.from_conf(django_celery_app().conf)
    assert str(raised.value) == (
        "CELERY_SINGLETON_BEAT_CLAIM_TTL = 100 is not valid: a number of seconds below "
        "CELERY_SINGLETON_BEAT_FENCE_RETENTION (60): a fence must outlive its claim."
    )


def test_a_misspelt_celery_setting_is_refused_with_the_name_meant(settings: Any) -> None:
    settings.CELERY_SINGLETON_BEAT_REDIS_URLS = ["redis://a:6379/0"]
    settings.CELERY_SINGLETON_BEAT_MISFIRE_GRASE = 60
    with pytest.raises(UnknownSetting) as raised:
        TaskConfig.from_conf(django_celery_app().conf)
    assert str(raised.value) == (
        "CELERY_SINGLETON_BEAT_MISFIRE_GRASE is not a celery-singleton-beat setting (nothing "
        "reads it): did you mean 'CELERY_SINGLETON_BEAT_MISFIRE_GRACE'?"
    )


def test_the_refusal_and_the_system_check_give_one_guess_for_an_app_setting_in_the_namespace(
    settings: Any,
) -> None:
    settings.CELERY_SINGLETON_BEAT_REDIS_URLS = ["redis://a:6379/0"]
    settings.CELERY_SINGLETON_BEAT_RETENTION = "30d"
    with pytest.raises(UnknownSetting) as raised:
        Config.from_conf(django_celery_app().conf)
    ((_msg, hint),) = warnings()
    assert str(raised.value) == (
        "CELERY_SINGLETON_BEAT_RETENTION is not a celery-singleton-beat setting (nothing reads "
        "it): did you mean 'SINGLETON_BEAT_RETENTION'? The Django app's own settings are "
        "SINGLETON_BEAT_* (no CELERY_ prefix); only the Celery settings are "
        "CELERY_SINGLETON_BEAT_*."
    )
    assert hint == f"Did you mean SINGLETON_BEAT_RETENTION? {str(raised.value).partition('? ')[2]}"
    assert {f.name.upper() for f in dataclasses.fields(AppSettings)} == APP_SETTINGS


def demo(workdir: Path, command: list[str], **settings: Any) -> subprocess.CompletedProcess[str]:
    """``celery -A demo_site COMMAND`` of the demo project with ``settings`` added to its
    ``settings.py``; a command still running after 30 s (beat that started) fails."""
    env = with_settings(demo_env(None, DEMO_DB_NAME=str(workdir / "demo.sqlite3")), **settings)
    try:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "demo_site", *command],
            cwd=workdir, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command} with {settings} kept running:\n{exc.stderr!r}")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"CELERY_SINGLETON_BEAT_MISFIRE_GRASE": 60},
            "CELERY_SINGLETON_BEAT_MISFIRE_GRASE is not a celery-singleton-beat setting (nothing "
            "reads it): did you mean 'CELERY_SINGLETON_BEAT_MISFIRE_GRACE'?",
        ),
        (
            {"CELERY_SINGLETON_BEAT_SCHEDULE_SOURCE": "nope"},
            "CELERY_SINGLETON_BEAT_SCHEDULE_SOURCE = 'nope' is not valid: 'beat_schedule' "
            "(default), 'django_celery_beat', 'sqlalchemy_celery_beat', 'runtime', the dotted "
            "path of a ScheduleSource subclass, or a list of these.",
        ),
        (
            {"CELERY_SINGLETON_BEAT_STORE": "database", "CELERY_SINGLETON_BEAT_DATABASE": "nope"},
            "CELERY_SINGLETON_BEAT_DATABASE = 'nope' is not valid: an alias of settings.DATABASES.",
        ),
    ],
)
def test_beat_and_check_in_a_django_project_name_the_setting_as_written(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    beat = demo(tmp_path, ["beat", "-S", "singleton"], **settings)
    assert beat.returncode != 0
    assert message in beat.stderr
    assert "singleton_beat_" not in beat.stderr.replace("celery_singleton_beat", "")

    check = demo(tmp_path, ["singleton-beat", "check"], **settings)
    assert check.returncode == 1, check.stdout
    assert any(line.startswith(f"ERROR {message}") for line in check.stdout.splitlines()), (
        check.stdout
    )
    assert "singleton_beat_" not in check.stdout.replace("celery_singleton_beat", "")


def test_a_worker_with_a_singleton_task_refuses_a_misspelt_setting(tmp_path: Path) -> None:
    worker = demo(
        tmp_path, ["worker", "-P", "solo", "--without-mingle", "--without-gossip"],
        CELERY_SINGLETON_BEAT_TASK_TTLS=30,
    )  # fmt: skip
    assert worker.returncode != 0
    assert (
        "CELERY_SINGLETON_BEAT_TASK_TTLS is not a celery-singleton-beat setting (nothing reads "
        "it): did you mean 'CELERY_SINGLETON_BEAT_TASK_TTL'?"
    ) in worker.stderr


def test_check_and_every_command_report_a_bad_django_app_setting_in_one_line(
    tmp_path: Path,
) -> None:
    message = (
        "the Celery app's task modules cannot be imported: SINGLETON_BEAT_RETENTION = "
        "'forever' is not valid; expected a duration such as"
    )
    check = demo(tmp_path, ["singleton-beat", "check"], SINGLETON_BEAT_RETENTION="forever")
    assert check.returncode == 1, check.stdout
    assert [line for line in check.stdout.splitlines() if message in line] == [
        line for line in check.stdout.splitlines() if line.startswith("ERROR")
    ]
    assert check.stdout.count(message) == 1 and message not in check.stderr
    assert "Traceback" not in check.stderr, check.stderr
    status = demo(tmp_path, ["singleton-beat", "status"], SINGLETON_BEAT_RETENTION="forever")
    assert status.returncode == 1
    assert status.stderr.startswith(f"Error: {message}") and status.stderr.count("\n") == 1

"""Settings that nothing reads are reported by Django's system checks, with the name meant;
a missing Celery setting is named as the user writes it in Django's settings."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from django.core import checks

from celery_singleton_beat.errors import ConfigurationError
from celery_singleton_beat.settings.config import Config, TaskConfig


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
            "CELERY_SINGLETON_BEAT_RETENTION is not a celery-singleton-beat setting: it is "
            "ignored.",
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
            "CELERY_SINGLETON_BEAT_REDIS_URL is not a celery-singleton-beat setting: it is "
            "ignored.",
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

"""The Redis settings take a Sentinel-managed primary as Celery's broker settings name one,
and refuse what they cannot use with the setting's name, the value and the accepted form."""

from __future__ import annotations

from typing import Any

import pytest

from celery_singleton_beat.errors import ConfigurationError, QuorumUnavailable
from celery_singleton_beat.locks import Redlock
from celery_singleton_beat.settings.config import Config, TaskConfig
from celery_singleton_beat.settings.urls import SentinelSpec, safe_url
from celery_singleton_beat.testing import sentinel_group

SENTINELS = "sentinel://:pw@s1:26379;sentinel://s2;sentinel://s3:26380/2"
OPTIONS = {"master_name": "orders", "sentinel_kwargs": {"password": "sentinel-secret"}}


def test_a_sentinel_url_is_one_member_with_its_sentinels_master_name_and_database() -> None:
    config = Config.from_conf(
        {
            "singleton_beat_redis_urls": [SENTINELS],
            "singleton_beat_redis_transport_options": OPTIONS,
        }
    )
    (member,) = config.members()
    assert (member.name, member.options, member.sentinel) == (
        "orders@s1:26379,s2:26379,s3:26380",
        {"db": 2, "password": "pw"},
        SentinelSpec(
            (("s1", 26379), ("s2", 26379), ("s3", 26380)), "orders",
            {"password": "sentinel-secret"}, 0,
        ),
    )  # fmt: skip


def test_a_sentinel_broker_is_used_with_its_transport_options_and_tls() -> None:
    tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": "/etc/ca.pem"}
    broker = {
        "broker_url": SENTINELS,
        "broker_transport_options": {**OPTIONS, "visibility_timeout": 3600},
        "broker_use_ssl": tls,
    }
    for config in (Config.from_conf(broker), TaskConfig.from_conf(broker)):
        (member,) = config.members()
        assert (config.redis_urls, member.name, member.options) == (
            (SENTINELS,), "orders@s1:26379,s2:26379,s3:26380",
            {"db": 2, "password": "pw", **tls, "ssl": True},
        )  # fmt: skip


def test_own_transport_options_win_over_the_brokers() -> None:
    conf = {
        "broker_url": SENTINELS,
        "broker_transport_options": {"master_name": "broker"},
        "singleton_beat_redis_transport_options": {"master_name": "beat"},
    }
    assert Config.from_conf(conf).members()[0].sentinel.master_name == "beat"  # type: ignore[union-attr]


def test_the_task_masters_setting_takes_a_sentinel_url() -> None:
    conf = {
        "singleton_beat_redis_urls": ["redis://r1:6379/0"],
        "singleton_beat_task_redis_urls": [SENTINELS],
        "singleton_beat_redis_transport_options": OPTIONS,
    }
    assert [m.name for m in TaskConfig.from_conf(conf).members()] == [
        "orders@s1:26379,s2:26379,s3:26380"
    ]


BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"singleton_beat_redis_urls": [SENTINELS]},
        "singleton_beat_redis_transport_options = {} is not valid: a dict as Celery's "
        "broker_transport_options: {'master_name': 'mymaster'}",
    ),
    (
        {"singleton_beat_redis_urls": ["redis+sentinel://s1:26379,s2:26379/orders"]},
        "singleton_beat_redis_urls = 'redis+sentinel://s1:26379,s2:26379/orders' is not valid: "
        "Celery's form of a Sentinel-managed primary, sentinel://host1:26379;",
    ),
    (
        {"singleton_beat_redis_urls": ["redis-sentinel://s1:26379/0"]},
        "singleton_beat_redis_urls = 'redis-sentinel://s1:26379/0' is not valid: Celery's form",
    ),
    (
        {
            "singleton_beat_redis_urls": ["sentinel://s1/1;sentinel://s2/2"],
            "singleton_beat_redis_transport_options": OPTIONS,
        },
        "singleton_beat_redis_urls = 'sentinel://s1/1;sentinel://s2/2' is not valid: one db "
        "for the primary",
    ),
    (
        {
            "singleton_beat_redis_urls": ["sentinel://s1;redis://s2"],
            "singleton_beat_redis_transport_options": OPTIONS,
        },
        "singleton_beat_redis_urls = 'sentinel://s1;redis://s2' is not valid: sentinel://",
    ),
    (
        {
            "singleton_beat_redis_urls": [SENTINELS],
            "singleton_beat_redis_transport_options": {**OPTIONS, "min_other_sentinels": -1},
        },
        "singleton_beat_redis_transport_options = {'master_name': 'orders', 'sentinel_kwargs': "
        "{'password': '***'}, 'min_other_sentinels': -1} is not valid",
    ),
    (
        {"singleton_beat_redis_urls": [SENTINELS], "singleton_beat_redis_use_ssl": "yes"},
        "singleton_beat_redis_use_ssl = 'yes' is not valid: None, True, or a dict of redis-py "
        "TLS options",
    ),
    (
        {"singleton_beat_redis_min_replicas": -1},
        "singleton_beat_redis_min_replicas = -1 is not valid: 'auto' (as many replicas as "
        "each primary reports; the default) or a number of replicas >= 0",
    ),
    (
        {"singleton_beat_redis_min_replicas": "all"},
        "singleton_beat_redis_min_replicas = 'all' is not valid",
    ),
]


@pytest.mark.parametrize(("conf", "message"), BAD)
def test_a_bad_redis_setting_is_refused_naming_it(conf: dict[str, Any], message: str) -> None:
    conf.setdefault("singleton_beat_redis_urls", ["redis://r1:6379/0"])
    for config_class in (Config, TaskConfig):
        with pytest.raises(ConfigurationError) as raised:
            config_class.from_conf(conf)
        assert str(raised.value).startswith(message), str(raised.value)
        assert "sentinel-secret" not in str(raised.value)


def test_listed_settings_and_urls_hide_every_password() -> None:
    config = Config.from_conf(
        {
            "singleton_beat_redis_urls": [SENTINELS],
            "singleton_beat_redis_transport_options": OPTIONS,
        }
    )
    assert config.settings["singleton_beat_redis_transport_options"] == {
        "master_name": "orders",
        "sentinel_kwargs": {"password": "***"},
    }
    assert safe_url(SENTINELS) == "sentinel://***@s1:26379;sentinel://s2;sentinel://s3:26380/2"


def test_a_lock_on_sentinels_with_a_password_uses_the_sentinel_kwargs() -> None:
    with sentinel_group(sentinel_password="sentinel-secret") as group:
        lock = Redlock.from_urls([group.url], transport_options=group.transport_options)
        assert lock.acquire("report", ttl=5) is not None
        lock.close()
        wrong = Redlock.from_urls([group.url], transport_options={"master_name": "mymaster"})
        with pytest.raises(QuorumUnavailable, match="MasterNotFoundError: No master found"):
            wrong.acquire("report", ttl=5)

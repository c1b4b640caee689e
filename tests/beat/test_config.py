"""Bad settings and entries fail at start-up, naming the setting or entry, value and form."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab, schedule

from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.errors import ConfigurationError, UnknownSetting
from celery_singleton_beat.settings.config import Config, TaskConfig

URLS = ["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7002/0", "redis://127.0.0.1:7003/0"]
ROOT = Path(__file__).resolve().parents[2]


def conf(**settings: Any) -> dict[str, Any]:
    return {"singleton_beat_redis_urls": URLS, **settings}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"singleton_beat_redis_urls": ["127.0.0.1:7001"]},
            r"singleton_beat_redis_urls = '127.0.0.1:7001' is not valid: a redis:// or rediss://",
        ),
        (
            {"singleton_beat_redis_urls": [URLS[0], URLS[0].replace("/0", "/1")]},
            r"singleton_beat_redis_urls = .* 127.0.0.1:7001 is given twice",
        ),
        ({"singleton_beat_redis_urls": 6379}, r"singleton_beat_redis_urls = 6379 is not valid"),
        ({"singleton_beat_mode": "both"}, r"singleton_beat_mode = 'both' is not valid: 'active'"),
        ({"singleton_beat_lease_ttl": 0}, r"singleton_beat_lease_ttl = 0 is not valid: a positive"),
        ({"singleton_beat_lease_ttl": -5}, r"singleton_beat_lease_ttl = -5 is not valid"),
        (
            {"singleton_beat_share_grace": -1},
            r"singleton_beat_share_grace = -1 is not valid: a number of seconds, 0 or more",
        ),
        ({"singleton_beat_share_grace": "2s"}, r"singleton_beat_share_grace = '2s' is not valid"),
        (
            {"singleton_beat_claim_ttl": 100, "singleton_beat_fence_retention": 60},
            r"singleton_beat_claim_ttl = 100 is not valid: a number of seconds below "
            r"singleton_beat_fence_retention \(60\)",
        ),
        (
            {"singleton_beat_node_timeout": 2.0},
            r"singleton_beat_node_timeout = 2.0 is not valid: .* a quarter of "
            r"singleton_beat_claim_ttl",
        ),
        ({"singleton_beat_health_port": 70000}, r"singleton_beat_health_port = 70000 is not valid"),
        ({"singleton_beat_key_prefix": ""}, r"singleton_beat_key_prefix = '' is not valid"),
        (
            {"singleton_beat_health_host": "0.0.0.0:8099"},
            r"singleton_beat_health_host = '0.0.0.0:8099' is not valid: the address the health "
            r"server binds: '0.0.0.0' \(every IPv4 interface, the default\)",
        ),
        ({"singleton_beat_health_host": ""}, r"singleton_beat_health_host = '' is not valid"),
        (
            {"singleton_beat_redis_urls": ["redis://127.0.0.1:7000/1?cluster=true"]},
            r"singleton_beat_redis_urls = 'redis://127.0.0.1:7000/1\?cluster=true' is not "
            r"valid: .*no database number on a Redis Cluster \(it has database 0 only: "
            r"SELECT is not allowed in cluster mode\)",
        ),
        (
            {"singleton_beat_redis_urls": ["redis://127.0.0.1:7000?cluster=true&db=2"]},
            r"singleton_beat_redis_urls = .* no database number on a Redis Cluster",
        ),
        (
            {"singleton_beat_redis_urls": ["redis://127.0.0.1:7000?cluster=sometimes"]},
            r"singleton_beat_redis_urls = 'redis://127.0.0.1:7000\?cluster=sometimes' is not "
            r"valid: .*cluster=true",
        ),
        (
            {"singleton_beat_redis_urls": ["unix:///tmp/redis.sock?cluster=true"]},
            r"singleton_beat_redis_urls = 'unix:///tmp/redis.sock\?cluster=true' is not valid: "
            r".*a redis:// or rediss:// URL",
        ),
        (
            {
                "singleton_beat_redis_urls": ["redis://127.0.0.1:7000?cluster=true"],
                "singleton_beat_key_prefix": "{billing}:",
            },
            r"singleton_beat_key_prefix = '\{billing\}:' is not valid: .*no \{ or \} on a "
            r"Redis Cluster",
        ),
        (
            {"singleton_beat_store": "mongo"},
            r"singleton_beat_store = 'mongo' is not valid: 'redis', 'database', 'sqlalchemy', "
            r".*'zookeeper', 'etcd', or the dotted",
        ),
        (
            {"singleton_beat_store": "no_such.Store"},
            r"singleton_beat_store = 'no_such.Store' is not valid: .*ModuleNotFoundError",
        ),
    ],
)
def test_a_bad_setting_is_refused_naming_it(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Config.from_conf(conf(**settings))


def test_defaults_are_the_documented_ones() -> None:
    config = Config.from_conf(conf())
    assert config.settings == {
        "singleton_beat_redis_urls": URLS,
        "singleton_beat_mode": "active",
        "singleton_beat_store": "redis",
        "singleton_beat_database": "default",
        "singleton_beat_lease_ttl": 10.0,
        "singleton_beat_claim_ttl": 3.0,
        "singleton_beat_share_grace": 0.0,
        "singleton_beat_publish_timeout": 10.0,
        "singleton_beat_fence_retention": 86400.0,
        "singleton_beat_misfire_grace": 300.0,
        "singleton_beat_key_prefix": "singleton-beat:",
        "singleton_beat_node_timeout": 0.05,
        "singleton_beat_health_port": None,
        "singleton_beat_health_host": "0.0.0.0",
        "singleton_beat_schedule_source": "beat_schedule",
        "singleton_beat_redis_transport_options": None,
        "singleton_beat_redis_use_ssl": None,
        "singleton_beat_redis_min_replicas": "auto",
        "singleton_beat_sqlalchemy_url": None,
        "singleton_beat_zookeeper_hosts": None,
        "singleton_beat_zookeeper_chroot": None,
        "singleton_beat_zookeeper_options": None,
        "singleton_beat_etcd_endpoints": None,
        "singleton_beat_etcd_timeout": 0.5,
        "singleton_beat_etcd_username": None,
        "singleton_beat_etcd_password": None,
        "singleton_beat_etcd_ca_file": None,
        "singleton_beat_etcd_cert_file": None,
        "singleton_beat_etcd_key_file": None,
    }


def test_a_redis_cluster_is_named_by_one_node_s_url_with_cluster_true() -> None:
    config = Config.from_conf(
        {"singleton_beat_redis_urls": "rediss://:pw@cache.example:6379?cluster=true"}
    )
    assert config.redis_urls == ("rediss://:pw@cache.example:6379?cluster=true",)
    assert config.settings["singleton_beat_redis_urls"] == [
        "rediss://***@cache.example:6379?cluster=true"
    ]


def test_a_comma_separated_string_of_masters_is_accepted() -> None:
    config = Config.from_conf({"singleton_beat_redis_urls": ",".join(URLS)})
    assert config.redis_urls == tuple(URLS)


def test_without_masters_a_redis_broker_is_used_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        config = Config.from_conf({"broker_url": "redis://:pw@broker:6379/0"})
    assert config.redis_urls == ("redis://:pw@broker:6379/0",)
    assert "One master gives no Redis fault tolerance" in caplog.text
    assert "pw" not in caplog.text


def test_without_masters_and_without_a_redis_broker_start_up_fails() -> None:
    with pytest.raises(ConfigurationError, match=r"singleton_beat_redis_urls = None is not valid"):
        Config.from_conf({"broker_url": "amqp://guest@localhost//"})


AMQP = "amqp://guest@localhost//"
DBURI = "postgresql+psycopg://app:secret@db/app"
ON_SQLALCHEMY_CELERY_BEAT = {
    "broker_url": AMQP,
    "beat_dburi": DBURI,
    "singleton_beat_schedule_source": "sqlalchemy_celery_beat",
}


@pytest.mark.parametrize(
    "source", ["sqlalchemy_celery_beat", ["beat_schedule", "sqlalchemy_celery_beat"]]
)
def test_the_store_follows_the_sqlalchemy_celery_beat_source_onto_beat_dburi(
    source: Any,
) -> None:
    """With sqlalchemy-celery-beat's tables as a source and neither a store nor a Redis
    master named, the store is the SQLAlchemy store on beat_dburi."""
    settings = {**ON_SQLALCHEMY_CELERY_BEAT, "singleton_beat_schedule_source": source}
    config = Config.from_conf(settings)
    assert (config.store, config.sqlalchemy_url, config.redis_urls) == ("sqlalchemy", DBURI, ())
    assert Config.errors(settings) == []


@pytest.mark.parametrize(
    ("settings", "store"),
    [
        ({"singleton_beat_store": "redis", "singleton_beat_redis_urls": URLS}, "redis"),
        ({"singleton_beat_redis_urls": URLS}, "redis"),
        ({"broker_url": "redis://broker:6379/0"}, "redis"),
        (
            {"singleton_beat_store": "etcd", "singleton_beat_etcd_endpoints": ["http://e1:2379"]},
            "etcd",
        ),
    ],
)
def test_a_store_or_a_redis_master_named_wins_over_the_sqlalchemy_celery_beat_source(
    settings: dict[str, Any], store: str
) -> None:
    assert Config.from_conf({**ON_SQLALCHEMY_CELERY_BEAT, **settings}).store == store


def test_the_task_locks_follow_the_store_onto_sqlalchemy_celery_beat_s_database() -> None:
    config = TaskConfig.from_conf(ON_SQLALCHEMY_CELERY_BEAT)
    assert (config.task_backend, config.redis_urls) == (
        "celery_singleton_beat.locks.sqlalchemy.from_app",
        (),
    )


def test_task_locks_named_win_over_the_store_followed() -> None:
    memory = "celery_singleton_beat.locks.memory.MemoryLock"
    named = {"singleton_beat_task_backend": memory}
    on_masters = {"singleton_beat_task_redis_urls": URLS}
    assert TaskConfig.from_conf({**ON_SQLALCHEMY_CELERY_BEAT, **named}).task_backend == memory
    config = TaskConfig.from_conf({**ON_SQLALCHEMY_CELERY_BEAT, **on_masters})
    assert (config.task_backend, config.redis_urls) == (None, tuple(URLS))


def test_another_source_without_a_redis_master_still_needs_the_masters_named() -> None:
    with pytest.raises(ConfigurationError, match=r"singleton_beat_redis_urls = None is not valid"):
        Config.from_conf(
            {**ON_SQLALCHEMY_CELERY_BEAT, "singleton_beat_schedule_source": "beat_schedule"}
        )


class EveryOtherTuesday(schedule):  # type: ignore[misc]
    """A custom schedule class: no slot times every replica could agree on."""


def scheduler_with(entry: dict[str, Any]) -> Scheduler:
    app = Celery("config-tests", broker="memory://")
    app.conf.update(singleton_beat_redis_urls=URLS, beat_schedule={"report": entry})

    @app.task(name="takes_nothing", shared=False)
    def takes_nothing() -> None:
        """A task of beat's app, registered when beat starts."""

    return Scheduler(app=app, lazy=False)


#: Bad values of the schedule policies, and the start of what the refusal says.
BAD_POLICIES = [
    ({"jitter": -1}, r"\['singleton_beat'\]\['jitter'\] = -1 is not valid: a number of seconds"),
    ({"jitter": "5s"}, r"\['jitter'\] = '5s' is not valid: a number of seconds, 0"),
    ({"pause_on_failure": 2.5}, r"\['pause_on_failure'\] = 2.5 is not valid: a whole number"),
    ({"pause_on_failure": True}, r"\['pause_on_failure'\] = True is not valid: a whole number"),
    ({"slot_kwarg": "scheduled at"}, r"\['slot_kwarg'\] = 'scheduled at' is not valid: a keyword"),
    (
        {"start_time": "2026-12-24T18:00:00"},
        r"\['start_time'\] = '2026-12-24T18:00:00' is not valid: an aware datetime or ISO 8601 "
        r"text with a UTC offset",
    ),
    ({"end_time": "tomorrow"}, r"\['end_time'\] = 'tomorrow' is not valid: an aware datetime"),
    (
        {"start_time": "2026-12-24T18:00:00Z", "end_time": "2026-12-24T17:00:00Z"},
        r"\['end_time'\] = '2026-12-24T17:00:00Z' is not valid: a time after start_time",
    ),
]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"task": "t", "schedule": EveryOtherTuesday(dt.timedelta(days=14))},
            r"beat_schedule\['report'\]\['schedule'\] = .*custom schedule classes have no "
            r"slot times",
        ),
        (
            {"task": "t", "schedule": 10, "options": {"singleton_beat": {"misfires": "skip"}}},
            r"beat_schedule\['report'\]\['options'\]\['singleton_beat'\]\['misfires'\] = 'skip' "
            r"is not valid: one of \['end_time', 'jitter', 'misfire', 'misfire_grace', "
            r"'overlap', 'overlap_ttl', 'pause_on_failure', 'paused', 'slot_kwarg', "
            r"'start_time', 'timezone'\]",
        ),
        (
            {"task": "t", "schedule": 10, "options": {"singleton_beat": {"misfire": "later"}}},
            r"\['misfire'\] = 'later' is not valid: 'coalesce' \(default\) or 'skip'",
        ),
        (
            {"task": "t", "schedule": 10, "options": {"singleton_beat": {"misfire_grace": 0}}},
            r"\['misfire_grace'\] = 0 is not valid: a positive number of seconds",
        ),
        (
            {
                "task": "t",
                "schedule": 10,
                "options": {"singleton_beat": {"timezone": "Mars/Olympus"}},
            },
            r"\['timezone'\] = 'Mars/Olympus' is not valid: an IANA zone name",
        ),
        *[
            ({"task": "t", "schedule": 10, "options": {"singleton_beat": option}}, message)
            for option, message in BAD_POLICIES
        ],
        (
            {"task": "t", "schedule": crontab(hour=9, nowfun=lambda: dt.datetime(2026, 1, 1))},
            r"beat_schedule\['report'\]\['schedule'\]\.nowfun = datetime\.datetime\(2026, 1, 1, "
            r"0, 0\) is not valid: a function returning an aware datetime",
        ),
        (
            {
                "task": "t",
                "schedule": 10,
                "kwargs": {"at": 1},
                "options": {"singleton_beat": {"slot_kwarg": "at"}},
            },
            r"\['slot_kwarg'\] = 'at' is not valid: a name the entry's kwargs do not give",
        ),
        (
            {
                "task": "takes_nothing",
                "schedule": 10,
                "options": {"singleton_beat": {"slot_kwarg": "at"}},
            },
            r"\['slot_kwarg'\] = 'at' is not valid: a keyword argument task 'takes_nothing' "
            r"takes \(takes_nothing\(\) got an unexpected keyword argument 'at'\)",
        ),
    ],
)
def test_a_bad_entry_is_refused_naming_the_entry(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        scheduler_with(entry)


def test_celery_beat_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.beat.app", "beat", "-S", "singleton"],
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "TEST_SETTINGS": '{"singleton_beat_mode": "both"}',
             "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "singleton_beat_mode = 'both' is not valid: 'active'" in result.stderr


def test_the_beat_banner_shows_mode_masters_without_passwords_and_prefix() -> None:
    app = Celery("banner", broker="memory://")
    app.conf.update(
        singleton_beat_redis_urls=["redis://:s3cret@r1:6379/0", "redis://r2:6379/0"],
        singleton_beat_mode="leader",
        singleton_beat_key_prefix="billing:",
    )
    info = Scheduler(app=app, lazy=True).info
    assert "mode leader" in info
    assert "key prefix 'billing:'" in info
    assert "redis://***@r1:6379/0, redis://r2:6379/0" in info
    assert "s3cret" not in info


def test_the_beat_banner_names_a_redis_cluster() -> None:
    app = Celery("banner", broker="memory://")
    app.conf.singleton_beat_redis_urls = ["redis://:s3cret@c1:7000?cluster=true"]
    info = Scheduler(app=app, lazy=True).info
    assert ". lock store -> Redis Cluster redis://***@c1:7000?cluster=true\n" in info + "\n"
    assert "s3cret" not in info


@pytest.mark.parametrize("config", [Config, TaskConfig])
@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("singleton_beat_redis_url", "singleton_beat_redis_urls"),
        ("singleton_beat_misfire_grase", "singleton_beat_misfire_grace"),
        ("singleton_beat_task_on_conflit", "singleton_beat_task_on_conflict"),
    ],
)
def test_a_misspelt_setting_is_refused_with_the_setting_meant(
    config: type[Config] | type[TaskConfig], typo: str, meant: str
) -> None:
    with pytest.raises(UnknownSetting) as raised:
        config.from_conf(conf(**{typo: 60}))
    assert str(raised.value) == (
        f"{typo} is not a celery-singleton-beat setting (nothing reads it): did you mean {meant!r}?"
    )
    assert (raised.value.name, raised.value.meant) == (typo, meant)


def test_a_setting_like_none_of_ours_is_refused_pointing_to_the_list() -> None:
    with pytest.raises(UnknownSetting) as raised:
        Config.from_conf(conf(singleton_beat_colour="blue"))
    assert str(raised.value) == (
        "singleton_beat_colour is not a celery-singleton-beat setting (nothing reads it): "
        "the settings are listed on the configuration page"
    )


def test_check_lists_every_unknown_setting_before_the_bad_values() -> None:
    found = Config.errors(
        conf(singleton_beat_misfire_grase=60, singleton_beat_redis_url="x", singleton_beat_mode="x")
    )
    assert [type(e).__name__ for e in found] == ["UnknownSetting", "UnknownSetting",
                                                  "ConfigurationError"]  # fmt: skip
    assert [e.name for e in found] == [
        "singleton_beat_misfire_grase",
        "singleton_beat_redis_url",
        "singleton_beat_mode",
    ]


def test_keys_of_other_families_are_not_ours() -> None:
    others = {
        "beat_schedule": {},
        "broker_url": "memory://",
        "SINGLETON_BEAT_RECORD": False,  # the Django app's own setting
        "my_singleton_beat_flag": True,
        "singleton_beat": 1,
    }
    assert Config.from_conf(conf(**others)).redis_urls == tuple(URLS)
    assert TaskConfig.from_conf(conf(**others)).redis_urls == tuple(URLS)


def start_beat(workdir: Path, settings: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``celery beat`` of tests.beat.app with ``settings``, on a Redis broker: beat must
    refuse to start; one still running after 30 s has started."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TEST_SETTINGS": json.dumps(settings),
           "TEST_BROKER_URL": "redis://127.0.0.1:1/0"}  # fmt: skip
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.beat.app", "beat", "-S", "singleton"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = beat.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        beat.kill()
        out, err = beat.communicate()
        pytest.fail(f"beat started with {settings}:\n{err}")
    return subprocess.CompletedProcess(beat.args, beat.returncode, out, err)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            # the broker is Redis: beat would take it for its only master
            {"singleton_beat_redis_urls": None, "singleton_beat_redis_url": URLS},
            "singleton_beat_redis_url is not a celery-singleton-beat setting (nothing reads "
            "it): did you mean 'singleton_beat_redis_urls'?",
        ),
        (
            {"singleton_beat_misfire_grase": 60},
            "singleton_beat_misfire_grase is not a celery-singleton-beat setting (nothing "
            "reads it): did you mean 'singleton_beat_misfire_grace'?",
        ),
    ],
)
def test_celery_beat_refuses_a_misspelt_setting_naming_the_setting_meant(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    result = start_beat(tmp_path, settings)
    assert result.returncode != 0
    assert message in result.stderr
    assert "using the broker" not in result.stderr


@pytest.mark.parametrize(
    ("settings", "reported"),
    [
        ({"singleton_beat_store": "databse"}, ["singleton_beat_store = 'databse' is not valid"]),
        (
            {"singleton_beat_store": "sqlalchemy", "singleton_beat_sqlalchemy_url": "notaurl"},
            ["singleton_beat_sqlalchemy_url = 'notaurl' is not valid"],
        ),
    ],
)
def test_check_reports_a_bad_value_alone_not_what_its_default_would_then_need(
    settings: dict[str, Any], reported: list[str]
) -> None:
    found = Config.errors({"broker_url": "amqp://guest@localhost//", **settings})
    assert [str(e).partition(":")[0] for e in found] == reported

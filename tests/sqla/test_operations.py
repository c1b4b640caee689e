"""The operator's tools on the SQLAlchemy store: ``status``, ``check``, ``locks`` and
``unlock`` from the command line against a running replica, and the pytest plugin's
database for a user's own tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.beat.scheduler import Scheduler
from celery_singleton_beat.locks.sqlalchemy import SqlAlchemyLock
from celery_singleton_beat.testing import TcpProxy, free_port, http_status, wait_for
from tests.support.clusters import FAST
from tests.support.databases import SqlAlchemyDatabases
from tests.support.sqlalchemy_cluster import SqlBeatCluster, sqlalchemy_beat_cluster


def cli(cluster: SqlBeatCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.sqla.app", "singleton-beat", *args],
        cwd=cluster.workdir, env=cluster.env(), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_status_check_locks_and_unlock_work_on_the_sqlalchemy_store(
    sqlalchemy_databases: SqlAlchemyDatabases, tmp_path: Path
) -> None:
    url = sqlalchemy_databases.url("postgresql", tmp_path)
    try:
        with sqlalchemy_beat_cluster(tmp_path, url, {"one": {"every": 1}}) as cluster:
            cluster.start_worker()
            replica = cluster.start_replica("r1")
            wait_for(lambda: len(cluster.executions()) >= 2, 30, "first executions")
            status = cli(cluster, "status", "--json")
            checked = cli(cluster, "check")
            lease = SqlAlchemyLock(url).acquire("stuck-task", ttl=60)
            assert lease is not None
            listed = cli(cluster, "locks", "--json")
            freed = cli(cluster, "unlock", "stuck-task", "--yes")
            after = cli(cluster, "locks")
    finally:
        sqlalchemy_databases.empty(url)
    assert status.returncode == 0, status.stdout + status.stderr
    data = json.loads(status.stdout)
    assert data["health"] == "healthy"
    assert data["store"] == f"slot store -> postgresql database {url}"
    assert [r["pid"] for r in data["replicas"]] == [replica.popen.pid]
    assert data["entries"][0]["name"] == "one" and data["entries"][0]["dispatched"] >= 2
    assert checked.returncode == 0, checked.stdout
    assert f"OK    database {url} answers (postgresql)\n" in checked.stdout
    assert f"OK    database {url}: the tables are at schema version 1\n" in checked.stdout
    assert "ERROR" not in checked.stdout
    locks = {lock["key"]: lock for lock in json.loads(listed.stdout)}
    assert locks.pop("stuck-task")["fence"] == lease.fence
    assert locks and {lock["kind"] for lock in locks.values()} == {"slot ran"}, "the slots' marks"
    assert freed.returncode == 0 and "released 'stuck-task'" in freed.stdout, freed.stdout
    assert "stuck-task" not in after.stdout


def dispatched(port: int, entry: str) -> float:
    """The replica's count of slots of ``entry`` it published, as ``/metrics`` reads it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    line = rf'^celery_singleton_beat_slots_dispatched_total\{{entry="{entry}"\}} (\S+)$'
    found = re.search(line, text, flags=re.MULTILINE)
    return float(found[1]) if found else 0.0


@pytest.mark.slow
def test_health_readiness_and_metrics_of_a_replica_follow_the_sqlalchemy_store(
    sqlalchemy_databases: SqlAlchemyDatabases, tmp_path: Path
) -> None:
    """/healthz and /readyz answer 200 while PostgreSQL answers, /readyz 503 (the loop
    still alive) while it is cut off and 200 again after; /metrics counts the slots sent."""
    url = sqlalchemy_databases.url("postgresql", tmp_path)
    proxy = TcpProxy(int(sa.make_url(url).port or 5432))
    through = sa.make_url(url).set(port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    statuses: dict[str, int] = {}
    try:
        with sqlalchemy_beat_cluster(
            tmp_path, url, {"one": {"every": 1}}, replicas_url=through, **FAST
        ) as cluster:
            cluster.start_replica("r1", settings={"singleton_beat_health_port": port})
            wait_for(lambda: http_status(port, "/readyz") == 200, 30, "/readyz 200")
            statuses["healthz"] = http_status(port, "/healthz")
            wait_for(lambda: dispatched(port, "one") >= 2, 15, "two slots counted")
            proxy.cut()
            wait_for(lambda: http_status(port, "/readyz") == 503, 15, "/readyz 503")
            statuses["healthz while cut"] = http_status(port, "/healthz")
            counted_while_cut = dispatched(port, "one")
            proxy.restore()
            wait_for(lambda: http_status(port, "/readyz") == 200, 20, "/readyz 200 again")
            wait_for(lambda: dispatched(port, "one") > counted_while_cut, 15, "slots counted again")
    finally:
        proxy.close()
        sqlalchemy_databases.empty(url)
    assert statuses == {"healthz": 200, "healthz while cut": 200}


def test_the_plugins_database_keeps_a_singleton_tasks_lock(
    singleton_beat_sqlalchemy_url: str,
) -> None:
    app = Celery("user_tests", broker="memory://")
    app.conf.update(
        task_always_eager=True,
        singleton_beat_sqlalchemy_url=singleton_beat_sqlalchemy_url,
        singleton_beat_task_backend="celery_singleton_beat.locks.sqlalchemy.from_app",
    )
    seen: list[str | None] = []

    @app.task(base=SingletonTask, bind=True, singleton_key="report")
    def report(self: SingletonTask) -> None:
        seen.append(SqlAlchemyLock(singleton_beat_sqlalchemy_url).holder(self.singleton.key))

    report.delay()
    assert len(seen) == 1 and seen[0] is not None, "the lock was held in the database meanwhile"
    assert SqlAlchemyLock(singleton_beat_sqlalchemy_url).held() == []


def test_check_on_tables_not_created_says_so_once_naming_the_command(tmp_path: Path) -> None:
    (tmp_path / "fresh.py").write_text(
        "from celery import Celery\n"
        "app = Celery('fresh', broker='memory://')\n"
        "app.conf.update(\n"
        "    singleton_beat_store='sqlalchemy',\n"
        f"    singleton_beat_sqlalchemy_url='sqlite:///{tmp_path}/fresh.db',\n"
        "    singleton_beat_task_backend='celery_singleton_beat.locks.sqlalchemy.from_app',\n"
        "    singleton_beat_schedule_source=['beat_schedule', 'runtime'],\n"
        ")\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "fresh", "singleton-beat", "check"],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 1, checked.stdout
    errors = [line for line in checked.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, checked.stdout
    assert "Run `celery -A fresh singleton-beat db upgrade`" in errors[0]


#: What ``check`` and the beat banner say of the store chosen by the source alone.
FOLLOWED = (
    "slot store 'sqlalchemy' on the database of beat_dburi: singleton_beat_store is unset, "
    "no Redis master is named, and singleton_beat_schedule_source reads "
    "sqlalchemy-celery-beat's tables from a database"
)


def test_check_passes_on_the_one_setting_of_the_migration_and_says_why_the_store_is_sqlalchemy(
    tmp_path: Path,
) -> None:
    (tmp_path / "moved.py").write_text(
        "from celery import Celery\n"
        "app = Celery('moved', broker='amqp://guest:guest@127.0.0.1:5672//')\n"
        f"app.conf.beat_dburi = 'sqlite:///{tmp_path}/app.db'\n"
        "app.conf.singleton_beat_schedule_source = 'sqlalchemy_celery_beat'\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "moved", "singleton-beat", *args],
            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    assert run("db", "upgrade").returncode == 0
    checked = run("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"OK    {FOLLOWED}\n" in checked.stdout
    assert "ERROR" not in checked.stdout


def test_the_beat_banner_says_why_the_store_is_sqlalchemy(
    singleton_beat_sqlalchemy_url: str,
) -> None:
    app = Celery("moved", broker="amqp://guest:guest@127.0.0.1:5672//")
    app.conf.update(
        beat_dburi=singleton_beat_sqlalchemy_url,
        singleton_beat_schedule_source="sqlalchemy_celery_beat",
    )
    scheduler = Scheduler(app=app, lazy=True)
    try:
        info = scheduler.info
    finally:
        scheduler.close()
    assert info.splitlines()[1:] == [
        f"    . slot store -> sqlite database {singleton_beat_sqlalchemy_url}",
        f"      ({FOLLOWED})",
    ]

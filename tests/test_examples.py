"""The deployment examples are valid YAML and probe the right endpoints."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from celery_singleton_beat.testing import CeleryCluster, RedisServer, free_port, wait_for
from tests.djangoapp.project import PROJECT, demo_env

DEPLOY = Path(__file__).resolve().parents[1] / "examples" / "deploy"


def test_the_compose_file_runs_three_beat_replicas_with_a_health_check() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    beat = compose["services"]["beat"]
    assert beat["command"][-5:-2] == ["beat", "-S", "singleton"]
    assert beat["deploy"]["replicas"] == 3
    assert "/healthz" in " ".join(beat["healthcheck"]["test"])
    assert {"redis-1", "redis-2", "redis-3"} <= set(compose["services"])


def kubernetes(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]


def test_the_kubernetes_beat_deployment_has_liveness_and_readiness_probes() -> None:
    deployment, budget = kubernetes("beat.yaml")
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == 8099
    assert budget["kind"] == "PodDisruptionBudget"


def test_the_kubernetes_masters_are_three_independent_redis_servers() -> None:
    service, statefulset = kubernetes("redis-masters.yaml")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["replicas"] == 3
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert "noeviction" in container["args"]


@pytest.mark.slow
def test_the_singleton_task_example_runs_one_copy_per_account(
    three_masters: list[RedisServer], tmp_path: Path
) -> None:
    example = DEPLOY.parent / "singleton_task"
    broker = RedisServer().start()
    env = {
        "PYTHONPATH": f"{example}:{example.parents[1]}",
        "BROKER_URL": broker.url,
        "SINGLETON_BEAT_REDIS_URLS": ",".join(m.url for m in three_masters),
    }
    cluster = CeleryCluster(tmp_path, "app", env)
    try:
        worker = cluster.start_worker(concurrency=4)
        send = (
            "import app; [app.sync_account.delay(42) for _ in range(5)]; app.sync_account.delay(7)"
        )
        subprocess.run([sys.executable, "-c", send], env=cluster.env(), check=True, timeout=60)
        wait_for(lambda: worker.text().count("skipped task:sync:42") == 4, 30, "four skips")
        wait_for(lambda: "syncing account 7" in worker.text(), 30, "the other account")
        assert worker.text().count("syncing account 42") == 1
    finally:
        cluster.stop()
        broker.stop()


@pytest.mark.slow
def test_the_django_demo_serves_the_admin_and_records_runs(
    tmp_path: Path, redis_cluster: Any
) -> None:
    redis: RedisServer = redis_cluster(1)[0]
    port = free_port()
    database = tmp_path / "demo.sqlite3"
    env = {**os.environ, **demo_env(redis, DEMO_DB_NAME=str(database))}
    demo = subprocess.Popen(
        [sys.executable, str(PROJECT / "run_demo.py"), "--seconds", "15",
         "--port", str(port), "--logs", str(tmp_path / "logs")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def serving() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(serving, 30, "the admin to listen")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/") as page:
            assert page.status == 200
            assert b"Django administration" in page.read()
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, output
    assert "user admin  password " in output
    with sqlite3.connect(database) as db:
        runs = db.execute(
            "SELECT count(*) FROM singleton_beat_taskrun WHERE status = 'success'"
        ).fetchone()[0]
        slots = db.execute(
            "SELECT entry, slot, count(*) FROM singleton_beat_slotdispatch GROUP BY entry, slot"
        ).fetchall()
        staff = db.execute("SELECT is_staff FROM auth_user WHERE username = 'admin'").fetchone()
        periodic = db.execute(
            "SELECT t.name, i.every, c.minute, c.hour, c.timezone"
            " FROM django_celery_beat_periodictask t"
            " LEFT JOIN django_celery_beat_intervalschedule i ON i.id = t.interval_id"
            " LEFT JOIN django_celery_beat_crontabschedule c ON c.id = t.crontab_id ORDER BY t.name"
        ).fetchall()
    assert runs >= 5, output
    assert len(slots) >= 5 and all(count == 1 for _, _, count in slots)
    assert staff == (1,)
    assert periodic == [
        ("nightly-report", None, "30", "2", "Europe/Berlin"),
        ("send-reminders", 3, None, None, None),
    ]
    from_the_tables = [s for entry, s, _ in slots if entry == "send-reminders"]
    assert len(from_the_tables) >= 3, f"a slot every 3 s from django-celery-beat's row: {slots}"


@pytest.mark.slow
def test_the_sqlalchemy_example_runs_as_its_readme_says_each_slot_once_without_redis(
    tmp_path: Path,
) -> None:
    from tests.support.sqlalchemy_cluster import rabbitmq_vhost

    example = DEPLOY.parent / "sqlalchemy"
    database = f"sqlite:///{tmp_path / 'beat.sqlite3'}"
    with rabbitmq_vhost() as broker:
        env = {"PYTHONPATH": f"{example}:{example.parents[1]}", "BROKER_URL": broker,
               "DATABASE_URL": database}  # fmt: skip
        cluster = CeleryCluster(tmp_path, "proj", env)

        def run(*args: str) -> str:
            done = subprocess.run(args, cwd=example, env=cluster.env(), capture_output=True,
                                  text=True, timeout=60, check=True)  # fmt: skip
            return done.stdout

        try:
            made = run(sys.executable, "-m", "celery", "-A", "proj", "singleton-beat", "db",
                       "upgrade")  # fmt: skip
            assert made == f"database {database}: tables created at schema version 1\n"
            assert run(sys.executable, "add_schedule.py") == (
                "added every-5-seconds and every-minute-berlin\n"
            )
            worker = cluster.start_worker()
            replicas = [cluster.start_replica(f"beat-{i}") for i in (1, 2, 3)]
            wait_for(lambda: "report every-5-seconds ran" in worker.text(), 30, "a first run")
            status = run(sys.executable, "-m", "celery", "-A", "proj", "singleton-beat", "status")
            time.sleep(6)
            cluster.kill(replicas[0])
            time.sleep(11)
        finally:
            cluster.stop()
    sent = [line for r in replicas for line in r.text().splitlines()
            if "Sending due task every-5-seconds" in line]  # fmt: skip
    slots = [line.rsplit(" ", 1)[1] for line in sent]
    assert len(slots) >= 3 and len(set(slots)) == len(slots), "each slot sent once"
    assert worker.text().count("report every-5-seconds ran") == len(slots)
    assert "cluster: healthy" in status and "replicas (3):" in status

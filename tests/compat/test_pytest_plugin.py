"""The pytest plugin shipped with the package: a user-style test project run with it, and
runs that do not use it pay nothing for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "testing"


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pytest`` in ``directory`` as a user runs it: none of this suite's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def test_the_example_projects_own_tests_pass_with_no_redis() -> None:
    """examples/testing: eager and in-process-worker tests of a user's singleton tasks,
    a second copy of a running sync skipped, a weekly slot sent twice run once, on the
    plugin's in-memory lock."""
    done = run_pytest(EXAMPLE)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("6 passed")


def test_the_plugin_starts_real_redis_masters_for_a_user_test(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_masters.py").write_text(
        "import pytest\n"
        "import redis\n"
        "from celery_singleton_beat.locks import Redlock\n\n"
        "@pytest.fixture\n"
        "def singleton_beat_redis_masters_count(request):\n"
        "    return 3 if 'down' in request.node.name else 2\n\n"
        "def test_two_masters(singleton_beat_redis_masters, singleton_beat_redis_urls):\n"
        "    assert len(singleton_beat_redis_urls) == 2\n"
        "    assert len(set(singleton_beat_redis_urls)) == 2\n"
        "    for url in singleton_beat_redis_urls:\n"
        "        assert redis.Redis.from_url(url).ping()\n\n"
        "def test_one_of_three_down_still_grants(\n"
        "    singleton_beat_redis_masters, singleton_beat_redis_urls\n"
        "):\n"
        "    lock = Redlock.from_urls(singleton_beat_redis_urls)\n"
        "    singleton_beat_redis_masters[0].kill()\n"
        "    lease = lock.acquire('task:sync:42', ttl=10)\n"
        "    assert lease is not None\n"
        "    assert lock.release(lease) is True\n"
    )
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("2 passed")


def test_a_run_that_uses_no_fixture_of_the_plugin_imports_neither_celery_nor_redis(
    tmp_path: Path,
) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_plain.py").write_text(
        "import sys\n\n"
        "def test_nothing_heavy_was_imported():\n"
        "    assert 'celery_singleton_beat.testing.pytest_plugin' in sys.modules\n"
        "    heavy = {m.split('.')[0] for m in sys.modules} & {'celery', 'kombu', 'redis'}\n"
        "    assert heavy == set()\n"
    )
    # pytest-celery's own plugin imports Celery: switched off to see ours alone
    done = run_pytest(tmp_path, "-p", "no:celery")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("1 passed")


BARE_TEST = """\
import time

from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_singleton_beat import events

app = Celery("bare", broker="memory://", backend="cache+memory://", set_as_current=False)
app.conf.update(
    beat_scheduler="celery_singleton_beat.Scheduler",
    broker_transport_options={"polling_interval": 0.05},
)
RAN = []


@app.task(bind=True)
def report(self):
    RAN.append(self.request.id)
    return "sent"


def test_a_slot_sent_twice_runs_once_in_the_in_process_worker(singleton_beat_memory_lock):
    dropped = []
    events.subscribe(dropped.append)
    headers = {"singleton_beat_entry": "report", "singleton_beat_slot": "2026-06-21T03:00Z"}
    with start_worker(app, pool="solo", perform_ping_check=False):
        assert report.apply_async(task_id="slot", headers=headers).get(timeout=10) == "sent"
        report.apply_async(task_id="slot", headers=headers)
        deadline = time.monotonic() + 10
        while not dropped:
            assert time.monotonic() < deadline, "the second copy was never dropped"
            time.sleep(0.01)
    assert RAN == ["slot"]
    assert [e.reason for e in dropped] == ["skipped_duplicate"]
"""


def test_the_in_process_worker_of_an_app_that_imports_nothing_of_the_library_drops_a_copy(
    tmp_path: Path,
) -> None:
    """The test module only names the scheduler in its app's settings (and subscribes to
    the library's events): the plugin and its in-memory lock do the rest."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_bare.py").write_text(BARE_TEST)
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("1 passed")

"""The documentation keeps up with the code: its settings, its examples, and the getting
started and migration pages run as written."""

from __future__ import annotations

import ast
import importlib.metadata
import itertools
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomllib
from celery import Celery
from packaging.requirements import Requirement

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.core.slots import slot_task_id
from celery_singleton_beat.locks import Lease
from celery_singleton_beat.settings.config import Config, TaskConfig
from celery_singleton_beat.testing import (
    CeleryCluster,
    Process,
    RedisServer,
    free_port,
    http_status,
    pytest_plugin,
    wait_for,
)
from tests.support.clusters import slot_ms

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def drawn_modules() -> set[str]:
    """The modules the drawing of docs/architecture.md names, as paths in the package."""
    drawing = (DOCS / "architecture.md").read_text().split("```\n")[1]
    folder, drawn = "", set()
    for line in drawing.splitlines()[1:]:  # below "celery_singleton_beat/"
        if "─" in line:
            continue
        start = re.match(r"  (?:(\w+/) |\S)", line)
        if start:  # a folder's first line, or a module at the top (no folder)
            folder = start.group(1) or ""
        drawn |= {
            name if "/" in name else folder + name for name in re.findall(r"[\w/]+\.py", line)
        }
    return drawn


def former_paths() -> set[str]:
    """The aliases of the paths the docs named before the folders (import-linter's
    "former module paths" contract lists them), as paths in the package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if "former" in c["name"]]
    return {m.partition(".")[2].replace(".", "/") + ".py" for m in contract["forbidden_modules"]}


def test_the_architecture_drawing_names_every_module_of_the_package_and_no_other() -> None:
    package = ROOT / "celery_singleton_beat"
    tree = {
        p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"
    }
    drawn = drawn_modules()
    assert (sorted(tree - former_paths() - drawn), sorted(drawn - tree)) == ([], [])


def test_every_module_opens_with_a_docstring_whose_summary_is_one_or_two_lines() -> None:
    modules = [
        *(ROOT / "celery_singleton_beat").rglob("*.py"),
        *(p for p in (ROOT / "django_app").rglob("*.py") if "migrations" not in p.parts),
    ]
    long_or_missing = []
    for path in modules:
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        if not docstring or docstring.split("\n\n")[0].count("\n") > 1:
            long_or_missing.append(path.relative_to(ROOT).as_posix())
    assert long_or_missing == []


def test_every_setting_has_a_heading_with_its_default_on_the_configuration_page() -> None:
    page = (DOCS / "configuration.md").read_text()
    headings = re.findall(r"^## (singleton_beat_\w+)$", page, flags=re.MULTILINE)
    fields = {f for cls in (Config, TaskConfig) for f in cls.__dataclass_fields__}
    settings = {f"singleton_beat_{f}" for f in fields if f != "redis_urls"} | {
        "singleton_beat_redis_urls",  # Config.redis_urls
        "singleton_beat_task_redis_urls",  # TaskConfig.redis_urls
    }
    assert sorted(headings) == sorted(settings)
    for name in settings:
        section = page.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert "Default:" in section, f"{name} has no default on the page"


def test_every_fixture_of_the_pytest_plugin_is_in_the_table_of_the_testing_page() -> None:
    page = (DOCS / "testing.md").read_text()
    listed = re.findall(r"^\| `(\w+)` \|", page, flags=re.MULTILINE)
    fixtures = [
        name
        for name, value in vars(pytest_plugin).items()
        if name.startswith("singleton_beat_") and callable(value)
    ]
    assert sorted(listed) == sorted(fixtures)


def python_block(page: str, containing: str) -> str:
    """The ```python block of ``page`` that contains ``containing``."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)
    return next(block for block in blocks if containing in block)


def test_the_fencing_example_writes_nothing_after_a_pause_outlived_the_lease() -> None:
    """The process pauses after its first write, past its lease; on resume the watchdog
    has not run yet (``lost`` is still false), and the example must not write again."""
    now = [0.0]
    lease = Lease("rebuild", "token", fence=7, ttl=10.0, valid_until=10.0, clock=lambda: now[0])
    written: list[tuple[int, int]] = []

    class Store:
        def write(self, batch: int, fence: int) -> None:
            written.append((batch, fence))
            now[0] += 30.0  # paused for 30 s after the write: the lease ran out meanwhile

    namespace: dict[str, Any] = {
        "app": Celery("docs", broker="memory://", set_as_current=False),
        "SingletonTask": SingletonTask, "batches": lambda: [1, 2, 3], "store": Store(),
    }  # fmt: skip
    exec(python_block("singleton-tasks.md", "def rebuild_index"), namespace)
    task = namespace["rebuild_index"]
    task.push_request(singleton_lease=lease)
    try:
        task.run()
    finally:
        task.pop_request()
    assert (written, lease.lost) == ([(1, 7)], False)


# -- the pages' snippets, run as written ------------------------------------------------

FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```$", flags=re.MULTILINE | re.DOTALL)
#: The environment of the processes a user starts: none of this test run's Django settings.
UNSET = ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
PG = {
    "host": os.environ.get("CSB_PG_HOST", "127.0.0.1"),
    "port": os.environ.get("CSB_PG_PORT", "5432"),
    "user": os.environ.get("CSB_PG_USER", "postgres"),
}


class Blocks:
    """The fenced blocks of one ``## `` section of a page, taken in order; every one must be."""

    def __init__(self, page: str, section: str) -> None:
        parts = re.split(r"^## ", (DOCS / page).read_text(), flags=re.MULTILINE)
        (body,) = [p.partition("\n")[2] for p in parts if p.partition("\n")[0] == section]
        self.left = [(lang, textwrap.dedent(text)) for _, lang, text in FENCE.findall(body)]
        self.where = f"{page}, {section}"

    def take(self, language: str) -> str:
        assert self.left, f"{self.where}: no block left, the test expects a {language} block"
        lang, text = self.left.pop(0)
        assert lang == language, f"{self.where}: a {lang} block where the test runs {language}"
        return text

    def commands(self) -> list[list[str]]:
        """The commands of the next shell block (comments and blank lines left out)."""
        lines = self.take("bash" if self.left[0][0] == "bash" else "sh").splitlines()
        return [argv for line in lines if (argv := shlex.split(line, comments=True))]

    def done(self) -> None:
        assert self.left == [], f"{self.where}: blocks no test runs: {self.left}"


#: The sections whose snippets the tests below run, page by page.
RUN = {
    "getting-started.md": {"Plain Celery", "Django"},
    "migrating-from-django-celery-beat.md": {"Steps"},
}


def test_every_snippet_of_the_pages_run_as_written_is_in_a_section_a_test_runs() -> None:
    for page, run in RUN.items():
        intro, *parts = re.split(r"^## ", (DOCS / page).read_text(), flags=re.MULTILINE)
        with_snippets = {p.partition("\n")[0] for p in parts if FENCE.search(p)}
        assert (with_snippets, FENCE.search(intro)) == (run, None), page


def check_pip(block: str) -> None:
    """``pip install`` of this distribution, with extras (in the command or its comment)
    that it declares: what the line would install is what this checkout is."""
    (line,) = block.strip().splitlines()
    pip, install, spec = shlex.split(line, comments=True)
    assert (pip, install) == ("pip", "install"), line
    requirement = Requirement(spec)
    assert requirement.name == "celery-singleton-beat", line
    named = requirement.extras | set(re.findall(r"\[([\w-]+)\]", line.partition("#")[2]))
    declared = set(importlib.metadata.metadata(requirement.name).get_all("Provides-Extra") or [])
    assert named and named <= declared, (line, declared)


@dataclass
class Project:
    """A project directory made from a page's snippets, the page's addresses pointed at this
    test's servers; its commands run as a user runs them, as subprocesses."""

    root: Path
    addresses: dict[str, str]
    cluster: CeleryCluster = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.cluster = CeleryCluster(self.root, "proj", unset=UNSET)

    def local(self, text: str) -> str:
        for written, here in self.addresses.items():
            text = text.replace(written, here)
        unknown = [u for u in re.findall(r"redis://[^\s\"',]+", text) if "127.0.0.1" not in u]
        assert unknown == [], f"addresses the test does not point anywhere: {unknown}"
        return text

    def write(self, block: str) -> Path:
        """A block headed ``# path``: the file, or added at the end of the file there."""
        path = self.root / re.fullmatch(r"# ([\w/]+\.py)", block.partition("\n")[0])[1]  # type: ignore[index]
        path.parent.mkdir(parents=True, exist_ok=True)
        before = path.read_text() if path.exists() else ""
        path.write_text(f"{before}\n{self.local(block)}")
        return path

    def argv(self, command: list[str]) -> list[str]:
        program, *args = command
        runners = {"celery": [sys.executable, "-m", "celery"], "python": [sys.executable]}
        assert program in runners, f"the test does not know how to run {command}"
        return [*runners[program], *(self.local(a) for a in args)]

    def run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """A command that ends, run to its end."""
        return subprocess.run(
            self.argv(command), cwd=self.root, env=self.cluster.env(), capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip

    def start(self, name: str, command: list[str]) -> Process:
        """A ``celery -A proj worker|beat`` that runs until stopped."""
        assert command[:3] == ["celery", "-A", "proj"] and command[3] in ("worker", "beat")
        return self.cluster.start(name, [self.local(a) for a in command[3:]])

    def log(self) -> str:
        return "".join(p.text() for p in self.cluster.processes)


def page_addresses(broker: RedisServer, masters: list[RedisServer]) -> dict[str, str]:
    """The hosts the pages name, and this test's servers in their place."""
    named = ["redis://r1:6379/0", "redis://r2:6379/0", "redis://r3:6379/0"]
    other = ["redis://redis-a:6379/0", "redis://redis-b:6379/0", "redis://redis-c:6379/0"]
    return {
        "redis://broker:6379/0": broker.url,
        **{name: m.url for name, m in zip(named, masters, strict=True)},
        **{name: m.url for name, m in zip(other, masters, strict=True)},
    }


def sent_slots(log: str, entry: str, task: str) -> list[str]:
    """The slots of ``entry`` that beat logged sending (the ``celery.beat`` INFO line)."""
    line = rf"Sending due task {re.escape(entry)} \({re.escape(task)}\) for slot (\S+)"
    return re.findall(line, log)


def succeeded(log: str, task: str) -> Counter[str]:
    """How often each task id of ``task`` succeeded, as the workers logged it."""
    return Counter(re.findall(rf"Task {re.escape(task)}\[([\w-]+)\] succeeded", log))


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.mark.slow
def test_getting_started_with_plain_celery_runs_as_written(
    three_masters: list[RedisServer], broker: RedisServer, tmp_path: Path
) -> None:
    """Three replicas, each its own project directory and health port: two run a worker and
    a beat, the third a worker with beat inside; each slot is sent once and runs once."""
    blocks = Blocks("getting-started.md", "Plain Celery")
    ports = [free_port() for _ in range(3)]
    replicas = [
        Project(
            tmp_path / f"replica-{n}", {**page_addresses(broker, three_masters), "8099": str(port)}
        )
        for n, port in enumerate(ports, 1)
    ]
    check_pip(blocks.take("sh"))
    files = [blocks.take("python"), blocks.take("python")]  # proj/celery.py, proj/tasks.py
    for project in replicas:
        (project.root / "proj").mkdir()
        (project.root / "proj" / "__init__.py").write_text("")
        for block in files:
            project.write(block)
    worker, beat = blocks.commands()
    (embedded,) = blocks.commands()
    check, status = blocks.commands()
    blocks.done()
    try:
        for project in replicas[:2]:
            project.start("worker", worker)
            project.start("beat", beat)
        replicas[2].start("worker", embedded)
        log = lambda: "".join(project.log() for project in replicas)  # noqa: E731
        wait_for(
            lambda: len(set(sent_slots(log(), "refresh-rates", "proj.tasks.refresh_rates"))) >= 3,
            60, f"three slots of refresh-rates\n{log()}",
        )  # fmt: skip
        slots = sent_slots(log(), "refresh-rates", "proj.tasks.refresh_rates")
        ids = [slot_task_id("refresh-rates", slot_ms(s)) for s in slots]
        wait_for(
            lambda: set(ids) <= set(succeeded(log(), "proj.tasks.refresh_rates")), 20,
            f"each slot to run\n{log()}",
        )  # fmt: skip
        assert [s for s, n in Counter(slots).items() if n > 1] == [], "a slot sent twice"
        times = sorted(slot_ms(s) for s in slots)
        assert {b - a for a, b in itertools.pairwise(times)} == {10_000}, slots
        ran = succeeded(log(), "proj.tasks.refresh_rates")
        assert [ran[i] for i in ids] == [1] * len(ids), "each slot runs once"
        for port in ports:  # the third replica's health endpoints are its embedded beat's
            assert (http_status(port, "/healthz"), http_status(port, "/readyz")) == (200, 200)
        for command in (check, status):
            result = replicas[0].run(command)
            out = result.stdout + result.stderr
            assert result.returncode == 0, out
            assert "refresh-rates" in out and "nightly-billing" in out, out
    finally:
        for project in replicas:
            project.cluster.stop()


def django_project(root: Path, addresses: dict[str, str]) -> Project:
    """A project as ``django-admin startproject proj`` makes it (on SQLite)."""
    project = Project(root, addresses)
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "proj", str(root)],
        env=project.cluster.env(), check=True, timeout=60,
    )  # fmt: skip
    return project


@pytest.mark.slow
def test_getting_started_with_django_runs_as_written(
    three_masters: list[RedisServer], broker: RedisServer, tmp_path: Path
) -> None:
    """Beat of a new Django project on the masters is ready; with the app added and
    migrated, its tables are there and beat starts as before."""
    blocks = Blocks("getting-started.md", "Django")
    port = free_port()
    project = django_project(
        tmp_path / "site", {**page_addresses(broker, three_masters), "8099": str(port)}
    )
    project.write(blocks.take("python"))  # proj/settings.py
    project.write(blocks.take("python"))  # proj/celery.py
    (beat,) = blocks.commands()
    project.write(blocks.take("python"))  # proj/settings.py: the app
    (migrate,) = blocks.commands()
    blocks.done()
    try:
        replica = project.start("beat", beat)
        wait_for(lambda: http_status(port, "/readyz") == 200, 30, f"/readyz\n{replica.text()}")
        project.cluster.stop()
        result = project.run(migrate)
        assert result.returncode == 0, result.stdout + result.stderr
        with sqlite3.connect(project.root / "db.sqlite3") as db:
            tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master")}
        assert {"singleton_beat_taskrun", "singleton_beat_slotdispatch"} <= tables
        again = project.start("beat-again", beat)
        wait_for(lambda: http_status(port, "/readyz") == 200, 30, f"/readyz\n{again.text()}")
        assert "Traceback" not in again.text()
    finally:
        project.cluster.stop()


#: The project of a django-celery-beat user before the migration (the test's, not the
#: page's): django-celery-beat's tables on PostgreSQL, a Redis broker, one task.
BEFORE = """
INSTALLED_APPS += ["django_celery_beat", "proj"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.postgresql", "NAME": "{name}",
    "USER": "{user}", "HOST": "{host}", "PORT": "{port}"}}}}
CELERY_BROKER_URL = "{broker}"
"""
TASKS = """
from celery import shared_task


@shared_task
def remind():
    return "reminded"
"""
ROW = """
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.create(name="remind", task="proj.tasks.remind", interval=every)
"""


@pytest.fixture
def database() -> Iterator[str]:
    """A PostgreSQL database of the test's own, empty, dropped at the end."""
    name = f"csb_docs_{os.getpid()}"
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(database: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dbname=database, **PG) as db:
        return db.execute(sql).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["database", "redis"])
def test_the_migration_from_django_celery_beat_runs_as_written(
    store: str,
    three_masters: list[RedisServer],
    broker: RedisServer,
    database: str,
    tmp_path: Path,
) -> None:
    """A project on ``DatabaseScheduler`` follows the guide, with either store: two
    singleton replicas then send each slot of its row once, each runs once, and the row's
    ``total_run_count`` goes on from where ``DatabaseScheduler`` left it."""
    blocks = Blocks("migrating-from-django-celery-beat.md", "Steps")
    project = django_project(tmp_path / "site", page_addresses(broker, three_masters))
    settings = project.root / "proj" / "settings.py"
    settings.write_text(
        settings.read_text() + BEFORE.format(name=database, broker=broker.url, **PG)
    )
    project.write(Blocks("getting-started.md", "Django").left[1][1])  # proj/celery.py
    (project.root / "proj" / "tasks.py").write_text(TASKS)
    assert project.run(["python", "manage.py", "migrate"]).returncode == 0
    assert project.run(["python", "manage.py", "shell", "-c", ROW]).returncode == 0
    check_pip(blocks.take("bash"))
    variants = {"database": blocks.take("python"), "redis": blocks.take("python")}
    (migrate,) = blocks.commands()
    before, after = blocks.commands()
    blocks.done()
    log = project.log
    try:
        project.start("worker", ["celery", "-A", "proj", "worker", "--loglevel", "INFO"])
        old = project.start("before", before)
        wait_for(lambda: succeeded(log(), "proj.tasks.remind"), 30, f"a run sent before\n{log()}")
        old.signal(signal.SIGTERM)
        old.popen.wait(10)
        counted_before = run_count(database)
        project.write(variants[store])
        result = project.run(migrate)
        assert result.returncode == 0, result.stdout + result.stderr
        replicas = [project.start(f"after-{n}", after) for n in (1, 2)]
        wait_for(lambda: len(counted(database)) >= 4, 40, f"four slots sent after\n{log()}")
        for replica in replicas:
            replica.signal(signal.SIGTERM)
            replica.popen.wait(10)
        slots = counted(database)
        ids = [slot_task_id("remind", s) for s in slots]
        wait_for(lambda: set(ids) <= set(succeeded(log(), "proj.tasks.remind")), 20, "each to run")
    finally:
        project.cluster.stop()
    assert {b - a for a, b in itertools.pairwise(slots)} == {2000}, slots
    ran = succeeded(log(), "proj.tasks.remind")
    assert [ran[i] for i in ids] == [1] * len(ids), "each slot runs once"
    assert run_count(database) == counted_before + len(slots)
    # (DatabaseScheduler left a row of its own, celery.backend_cleanup, scheduled too)
    in_tables = ("remind",) in query(database, "SELECT name FROM singleton_beat_slotentry")
    in_redis = sum(m.client().dbsize() for m in three_masters) > 0
    assert (in_tables, in_redis) == (store == "database", store == "redis"), "the store chosen"


def counted(database: str) -> list[int]:
    """The slots of ``remind`` the replicas counted in the row (the Django app's table)."""
    rows = query(database, "SELECT slot FROM singleton_beat_countedslot WHERE entry = 'remind'")
    return sorted(slot for (slot,) in rows)


def run_count(database: str) -> int:
    """``total_run_count`` of the row, as django-celery-beat's admin shows it."""
    sql = "SELECT total_run_count FROM django_celery_beat_periodictask WHERE name = 'remind'"
    ((count,),) = query(database, sql)
    return int(count)

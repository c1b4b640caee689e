"""The version matrix: the declared floors, a middle cell and the newest releases.

Each cell is a fresh venv on its own Python with the package installed from the built
wheel (not editable), pinned Celery, kombu, redis-py and Django, and a slim set of test
dependencies. It runs a representative subset of the suite from a copy of ``tests/``
outside the repository, so that every import of the package resolves to the wheel.

``make nox`` runs all cells (``make test`` includes it); ``nox -s floors`` runs one.
The Pythons are pyenv's: the Makefile puts their ``bin`` directories on ``PATH``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = False

ROOT = Path(__file__).resolve().parent
DIST = ROOT / ".nox" / "_dist"
#: What an editable install, a build or a test run leaves in the tree; neither the wheel
#: built here nor the one tests/packaging/test_wheel.py builds takes it in.
BUILD_LEFTOVERS = (
    ".git",
    ".venv",
    ".nox",
    "*.egg-info",
    "build",
    "dist",
    "site",
    "__pycache__",
    ".*_cache",
    "node_modules",
    "*.sqlite3*",
    "logs",
    "test-artifacts",
    "tests-artifacts",
)

# enough to run the subset; not the benchmarks' (pottery, redbeat) nor the browser's
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.2",
    "pytest-django>=4.8",
    "psycopg[binary]>=3.1",
    "PyMySQL>=1.1",  # tests/djangoapp/settings.py declares a MariaDB alias through it
    "ephem>=4.1",
    "cron-descriptor>=1.4",
    "prometheus-client>=0.17",
    # examples/testing uses its celery_app fixture, as a user's own test suite would
    "pytest-celery>=1.0",
    "django-celery-results>=2.5",  # tests/djangoapp/settings.py installs its app
]

# the lock contract on real masters, beat replicas (see Cell.replicas), beat through a
# Sentinel failover (see Cell.sentinel), tasks on real workers, the Django records and
# admin, slot times, and the compatibility tests of the private APIs
SUBSET = [
    "tests/locks/test_contract.py",
    "tests/beat/test_replicas.py",
    "tests/topologies/test_sentinel.py",
    "tests/tasks/test_workers.py",
    "tests/djangoapp/test_admin_and_records.py",
    "tests/beat/test_slots.py",
    "tests/compat",
]
#: The beat replica tests (tests/beat/test_replicas.py) a cell may run, by name: the full
#: suite runs all of them on both slot stores; a cell runs the ones it names.
REPLICAS = (
    "three_active_replicas or killing_the_replica or dying_between_publish_and_done "
    "or leader_mode_fails_over"
)


@dataclass(frozen=True)
class Cell:
    python: str
    pins: list[str]
    deselect: list[str] = field(default_factory=list)
    replicas: str = "three_active_replicas"
    """The replica tests run on the Redis slot store (a ``-k`` expression): three
    replicas end to end in every cell; failover and crashes where they differ most
    from the full suite's versions, the floors."""
    database_store: str = ""
    """The replica tests also run on the PostgreSQL slot store: in one cell, the floors,
    where the oldest Django and driver meet it."""
    sentinel: str = ""
    """The Sentinel failover tests the cell runs (a ``-k`` expression; none when empty):
    the floors, where redis-py 5.0's ``Sentinel`` finds the promoted replica."""
    sqlalchemy_contract: bool = False
    """The slot-store contract suite also runs on the SQLAlchemy store (SQLite, PostgreSQL,
    MariaDB): in the floors cell, on the oldest SQLAlchemy the ``[sqlalchemy]`` extra
    allows (the lock contract runs on it in every cell)."""

    def chosen(self) -> str:
        """The cell's ``-k`` expression over the subset."""
        redis = f"({self.replicas}) and not postgresql"
        postgresql = f"({self.database_store}) and postgresql" if self.database_store else ""
        sentinel = f"test_sentinel and ({self.sentinel})" if self.sentinel else ""
        return f"(not test_replicas and not test_sentinel) or ({redis})" + "".join(
            f" or ({extra})" for extra in (postgresql, sentinel) if extra
        )


CELLS = {
    "floors": Cell(
        "3.10",
        ["celery==5.3.*", "kombu==5.3.*", "redis==5.0.*", "django==4.2.*", "sqlalchemy==2.0.0"],
        replicas=REPLICAS,
        database_store="three_active_replicas or killing_the_replica",
        sentinel="lost_writes_never_sends",
        sqlalchemy_contract=True,
    ),
    "middle": Cell(
        "3.12",
        ["celery==5.5.*", "kombu==5.5.*", "redis==6.*", "django==5.1.*"],
    ),
    # the newest release of everything the package allows
    "newest": Cell("3.13", []),
}


def wheel(dist: Path) -> Path:
    """The package's wheel, built into ``dist`` from a clean copy of the tree.

    The copy leaves out what an editable install or an earlier build left behind
    (``*.egg-info``, ``build/``), so the wheel holds what a fresh clone would give. Each
    cell builds into a folder of its own, so that cells run by separate nox processes at
    once (``make test``) never build into one folder.
    """
    if dist.exists():
        shutil.rmtree(dist)
    source = dist / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"building the wheel failed:\n{done.stdout}\n{done.stderr}")
    (built,) = dist.glob("*.whl")
    return built


def installs_skipped(session: nox.Session) -> bool:
    """Whether nox skips this session's installs: its venv is reused and ``--no-install``
    was given (``make test`` installs every cell's venv while the suite runs, then runs
    the cells on them)."""
    reused = getattr(session.virtualenv, "_reused", False)
    return bool(reused and getattr(session._runner.global_config, "no_install", False))


VERSIONS = (
    "import platform, celery, kombu, redis, django, sqlalchemy; print('cell versions: Python',"
    " platform.python_version(), 'celery', celery.__version__, 'kombu', kombu.__version__,"
    " 'redis', redis.__version__, 'django', django.__version__, 'sqlalchemy',"
    " sqlalchemy.__version__)"
)


def run_cell(session: nox.Session, cell: Cell) -> None:
    started = time.monotonic()
    if not installs_skipped(session):
        built = wheel(DIST / session.name)
        session.install(
            "--quiet", f"{built}[django,sqlalchemy,zookeeper,etcd]", *cell.pins, *TEST_DEPS
        )
    installed = time.monotonic()
    suite = Path(session.create_tmp()).resolve() / "suite"
    if suite.exists():
        shutil.rmtree(suite)
    suite.mkdir()
    for name in ("tests", "examples"):
        shutil.copytree(ROOT / name, suite / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", suite / "pyproject.toml")  # pytest's settings
    session.chdir(suite)
    session.run(
        "python", "-c",
        "import celery_singleton_beat as c, django_celery_singleton_beat as d;"
        "assert 'site-packages' in c.__file__ and 'site-packages' in d.__file__, c.__file__",
        silent=True,
    )  # fmt: skip
    session.run("python", "-c", VERSIONS)
    paths = [p for p in SUBSET if (suite / p).exists()]
    deselect = [arg for test in cell.deselect for arg in ("--deselect", test)]
    chosen = cell.chosen()
    session.run(
        "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=", *paths,
        "-k", chosen, *deselect, *session.posargs,
    )  # fmt: skip
    if cell.sqlalchemy_contract:
        session.run(
            "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
            "tests/stores/test_contract.py", "-k", "sqlalchemy", *session.posargs,
        )  # fmt: skip
    session.log(
        "cell timing: install %.0fs, tests %.0fs",
        installed - started, time.monotonic() - installed,
    )  # fmt: skip


@nox.session(python=CELLS["floors"].python)
def floors(session: nox.Session) -> None:
    """Python 3.10, Celery 5.3, kombu 5.3, redis-py 5.0, Django 4.2, SQLAlchemy 2.0.0: the
    declared floors."""
    run_cell(session, CELLS["floors"])


@nox.session(python=CELLS["middle"].python)
def middle(session: nox.Session) -> None:
    """Python 3.12, Celery 5.5, kombu 5.5, redis-py 6, Django 5.1."""
    run_cell(session, CELLS["middle"])


@nox.session(python=CELLS["newest"].python)
def newest(session: nox.Session) -> None:
    """Python 3.13 and the newest release of every dependency."""
    run_cell(session, CELLS["newest"])

"""The package as users get it: the built wheel and sdist, installed into a fresh venv.

An editable install reads the source tree and hides every file that the build leaves
out (the dashboard template was one). Here the distributions are built with ``python -m
build``, checked with ``twine check``, installed non-editable (with their dependencies)
into a new venv each, and exercised from a directory outside the repository, so that
nothing can be imported from the sources.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_singleton_beat.testing import RedisServer, wait_for
from tests.support.project import noxfile

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VERSION = next(
    node.value.value
    for node in ast.parse((ROOT / "celery_singleton_beat" / "__init__.py").read_text()).body
    if isinstance(node, ast.Assign)
    and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
    and isinstance(node.value, ast.Constant)
)
APP = "django_celery_singleton_beat"
#: Every path the docs and examples name, as ``module:attribute``: each imports from the
#: installed distribution, the paths that modules had before the package's folders too
#: (the pytest plugin needs pytest: its entry point is checked in the wheel instead).
DOCUMENTED = [
    "celery_singleton_beat:Scheduler",
    "celery_singleton_beat:SingletonTask",
    "celery_singleton_beat:SlotAwareTask",
    "celery_singleton_beat.task:SlotAwareTask",
    "celery_singleton_beat.schedule:add",
    "celery_singleton_beat.schedule:run_now",
    "celery_singleton_beat.events:subscribe",
    "celery_singleton_beat.overlap:install",
    "celery_singleton_beat.slots:CronSlots",
    "celery_singleton_beat.testing:redis_servers",
    "celery_singleton_beat.locks:Redlock",
    "celery_singleton_beat.locks.base:LockBackend",
    "celery_singleton_beat.stores:MemorySlotStore",
    "celery_singleton_beat.stores.base:SlotStore",
    "celery_singleton_beat.sources.base:ScheduleSource",
    "celery_singleton_beat.errors:QuorumUnavailable",
    f"{APP}.locks:DatabaseLock",
]
PACKAGE_DATA = {
    "celery_singleton_beat/py.typed",
    f"{APP}/py.typed",
    f"{APP}/templates/admin/singleton_beat/dashboard.html",
    f"{APP}/templates/admin/singleton_beat/taskrun/change_list.html",
    f"{APP}/migrations/__init__.py",
    f"{APP}/migrations/0001_initial.py",
    f"{APP}/management/commands/singleton_beat_prune.py",
}

# A user's project: Celery configured from Django settings, the app in INSTALLED_APPS.
PROJECT = {
    "manage.py": """
        import os, sys
        from django.core.management import execute_from_command_line
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        execute_from_command_line(sys.argv)
    """,
    "proj/__init__.py": "from .celery import app\n",
    "proj/celery.py": """
        import os
        from celery import Celery
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        app = Celery("proj")
        app.config_from_object("django.conf:settings", namespace="CELERY")
    """,
    "proj/urls.py": """
        from django.contrib import admin
        from django.urls import path
        urlpatterns = [path("admin/", admin.site.urls)]
    """,
    "proj/settings.py": """
        import os
        SECRET_KEY = "smoke-only"
        USE_TZ = True
        ALLOWED_HOSTS = ["*"]
        ROOT_URLCONF = "proj.urls"
        INSTALLED_APPS = [
            "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
            "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
            "django_celery_singleton_beat",
        ]
        MIDDLEWARE = [
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ]
        TEMPLATES = [{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]},
        }]
        STATIC_URL = "/static/"
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
        CELERY_BROKER_URL = os.environ["SMOKE_REDIS_URL"]
        CELERY_SINGLETON_BEAT_REDIS_URLS = os.environ["SMOKE_REDIS_URL"]
        CELERY_BEAT_SCHEDULE = {"tick": {"task": "proj.tick", "schedule": 60.0}}
    """,
    # what a Django user checks by hand: the scheduler alias, the version, the dashboard
    "smoke.py": """
        import importlib.metadata, json, os
        import django
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        django.setup()
        import celery_singleton_beat
        from celery.beat import Service
        from celery.utils.imports import symbol_by_name
        from django.contrib.auth.models import User
        from django.test import Client
        from django.urls import reverse
        import proj

        scheduler = Service(proj.app, scheduler_cls="singleton").get_scheduler(lazy=True)
        staff = User.objects.create_user("staff", is_staff=True, is_superuser=True)
        client = Client()
        client.force_login(staff)
        page = client.get(reverse("admin:singleton_beat_dashboard"))
        print(json.dumps({
            "module": celery_singleton_beat.__file__,
            "version": celery_singleton_beat.__version__,
            "metadata_version": importlib.metadata.version("celery-singleton-beat"),
            "scheduler": f"{type(scheduler).__module__}.{type(scheduler).__qualname__}",
            "dashboard_url": reverse("admin:singleton_beat_dashboard"),
            "dashboard_status": page.status_code,
            "dashboard_title": "<h1>Singleton beat dashboard</h1>" in page.content.decode(),
            "documented": sorted(p for p in json.loads(os.environ["SMOKE_DOCUMENTED"])
                                 if symbol_by_name(p) is not None),
        }))
    """,
}


def run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from it (``python -m build``'s default route).

    Built from a copy without the ``*.egg-info`` that an editable install leaves behind:
    setuptools would take that stale file list into the sdist, as a fresh clone would not.
    """
    source = tmp_path_factory.mktemp("source") / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*noxfile().BUILD_LEFTOVERS))
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, source], cwd=out)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that could point Python back at the sources."""
    leaks = {"PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE"}
    env = {k: v for k, v in os.environ.items() if k not in leaks}
    env.update(PYTHONUNBUFFERED="1", PIP_QUIET="1", **extra)
    return env


def test_the_distributions_are_named_with_the_one_version(dists: dict[str, Path]) -> None:
    assert dists["wheel"].name == f"celery_singleton_beat-{VERSION}-py3-none-any.whl"
    assert dists["sdist"].name == f"celery_singleton_beat-{VERSION}.tar.gz"


def test_twine_check_passes_on_the_wheel_and_the_sdist(dists: dict[str, Path]) -> None:
    out = run([sys.executable, "-m", "twine", "check", "--strict", *dists.values()], ROOT)
    assert out.count("PASSED") == 2


def test_the_wheel_holds_templates_migrations_and_py_typed_of_both_packages(
    dists: dict[str, Path],
) -> None:
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    assert PACKAGE_DATA - names == set()
    entry_points = zipfile.ZipFile(dists["wheel"]).read(
        f"celery_singleton_beat-{VERSION}.dist-info/entry_points.txt"
    )
    assert b"singleton = celery_singleton_beat:Scheduler" in entry_points
    assert b"singleton-beat = celery_singleton_beat.ops.cli:singleton_beat" in entry_points
    assert b"singleton_beat = celery_singleton_beat.testing.pytest_plugin" in entry_points


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_from_the_distribution_beat_cli_migrate_and_dashboard_work(
    kind: str, dists: dict[str, Path], redis_url: str, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path)
    bin_ = venv / "bin"
    # the project below uses Redis as its broker too, as most users do: celery[redis]
    install = [f"{dists[kind]}[django]", "celery[redis]"]
    run([bin_ / "python", "-m", "pip", "install", *install], tmp_path, clean_env())
    project = tmp_path / "project"
    for name, text in PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(textwrap.dedent(text))
    env = clean_env(SMOKE_REDIS_URL=redis_url, SMOKE_DOCUMENTED=json.dumps(DOCUMENTED))

    out = run([bin_ / "python", "manage.py", "migrate", "--no-input"], project, env)
    assert "Applying singleton_beat.0001_initial... OK" in out

    smoke = json.loads(run([bin_ / "python", "smoke.py"], project, env).splitlines()[-1])
    assert Path(smoke["module"]).is_relative_to(venv)
    assert smoke == {
        "module": smoke["module"],
        "version": VERSION,
        "metadata_version": VERSION,
        "scheduler": "celery_singleton_beat.beat.scheduler.Scheduler",
        "dashboard_url": "/admin/singleton_beat/taskrun/dashboard/",
        "dashboard_status": 200,
        "dashboard_title": True,
        "documented": sorted(DOCUMENTED),
    }

    out = run([bin_ / "celery", "-A", "proj", "singleton-beat", "--help"], project, env)
    assert out.startswith("Usage: celery singleton-beat")

    log = project / "beat.log"
    with log.open("wb") as sink:
        beat = subprocess.Popen(
            [bin_ / "celery", "-A", "proj", "beat", "-S", "singleton", "--loglevel", "INFO",
             "--pidfile=", "-s", project / "beat-schedule"],
            cwd=project, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "1 entries loaded" in log.read_text(), 30, f"beat\n{log.read_text()}")
    finally:
        beat.terminate()
        beat.wait(10)
    text = log.read_text()
    assert ". singleton beat -> mode active, key prefix 'singleton-beat:'" in text
    assert "Traceback" not in text


def test_the_sdist_holds_the_changelog_readme_and_the_django_app_data(
    dists: dict[str, Path],
) -> None:
    top = f"celery_singleton_beat-{VERSION}"
    with tarfile.open(dists["sdist"]) as sdist:
        names = set(sdist.getnames())
    expected = {f"{top}/CHANGELOG.md", f"{top}/README.md", f"{top}/pyproject.toml"} | {
        f"{top}/{name if name.startswith('celery') else 'django_app/' + name}"
        for name in PACKAGE_DATA
    }
    assert expected - names == set()

"""What pyproject.toml declares matches what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

from tests.support.project import noxfile

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# the interpreter `make test` runs the whole suite on (the Makefile's PYTHON)
DEFAULT_PYTHON = re.search(r"command -v python(3\.\d+)", (ROOT / "Makefile").read_text())


def test_the_python_classifiers_are_exactly_the_pythons_ci_runs() -> None:
    assert DEFAULT_PYTHON is not None
    ci = {cell.python for cell in noxfile().CELLS.values()} | {DEFAULT_PYTHON[1]}
    declared = {
        c.rsplit(" :: ", 1)[1]
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert sorted(declared) == sorted(ci) == ["3.10", "3.11", "3.12", "3.13"]


def test_requires_python_is_the_oldest_python_of_the_matrix() -> None:
    oldest = min(
        (cell.python for cell in noxfile().CELLS.values()),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    assert PROJECT["requires-python"] == f">={oldest}"


def test_the_declared_floors_are_the_floors_cell_pins() -> None:
    floors = {pin.split("==")[0]: pin.split("==")[1] for pin in noxfile().CELLS["floors"].pins}
    extras = PROJECT["optional-dependencies"]
    requirements = PROJECT["dependencies"] + extras["django"] + extras["sqlalchemy"]
    declared = dict(dep.split(">=") for dep in requirements if dep.split(">=")[0] in floors)
    assert declared == {"celery": "5.3", "redis": "5", "django": "4.2", "sqlalchemy": "2.0.0"}
    assert floors == {
        "celery": "5.3.*", "kombu": "5.3.*", "redis": "5.0.*", "django": "4.2.*",
        "sqlalchemy": "2.0.0",
    }  # fmt: skip


def test_the_version_has_one_source() -> None:
    assert "version" not in PROJECT
    assert "version" in PROJECT["dynamic"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "celery_singleton_beat.__version__"
    }

"""The chaos group: failures outside the everyday ones (an emptied master, a slow or
black-holed broker, clocks that disagree, secrets in URLs). ``make test`` runs it with the
rest; ``pytest -m chaos`` runs it alone."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.chaos)

"""The repository's own files as the packaging tests read them: its root and its noxfile
(which holds the version matrix and what a build leaves behind, ``BUILD_LEFTOVERS``)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def noxfile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["noxfile"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module

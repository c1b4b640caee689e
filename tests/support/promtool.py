"""``promtool``, which checks the shipped alert rules and the dashboard's expressions."""

from __future__ import annotations

import shutil

import pytest


def promtool() -> str:
    """Its path; without it the calling test fails, saying how to install it (it never
    skips: the rules would go unchecked)."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: it checks the shipped alert rules and dashboard. Install "
            "Debian's prometheus package (make promtool, or apt-get install prometheus) and "
            "run again."
        )
    return found

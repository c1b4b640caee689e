"""Debian's chromium driven by playwright-python, for the admin's browser tests; their
screenshots are kept in ``tests-artifacts/``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "tests-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@contextmanager
def chromium_page(height: int = 1000) -> Iterator[Any]:
    """A page of a chromium started for it (and closed after); the test fails when
    chromium is missing (playwright downloads no browser here)."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does it as root)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": height})
        finally:
            browser.close()


def log_in(page: Any, url: str, user: str = "admin", password: str = "s3cret-pw") -> None:
    """Open ``url`` of the admin and log in on the page it sends an anonymous user to."""
    page.goto(url)
    assert "/admin/login/" in page.url, "the admin asks anonymous users to log in"
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("input[type=submit]")

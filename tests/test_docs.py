"""The documentation keeps up with the code."""

from __future__ import annotations

import re
from pathlib import Path

from celery_singleton_beat.config import Config, TaskConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"


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

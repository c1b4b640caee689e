"""The documentation keeps up with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from celery import Celery

from celery_singleton_beat import SingletonTask
from celery_singleton_beat.locks import Lease
from celery_singleton_beat.settings.config import Config, TaskConfig

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

"""The Grafana dashboard that ships (``examples/deploy/grafana``) reads only metrics the
library exports: every metric a panel's expression names is among the samples a real
beat replica (and a worker's singleton task) exported on ``/metrics`` in this test, and
every expression is valid PromQL (``promtool check rules``)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.promtool import promtool
from tests.support.scraped import Sample

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "examples" / "deploy" / "grafana" / "singleton-beat-dashboard.json"
#: PromQL words that are not metric names (functions, aggregations, operators).
WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "delta", "deriv",
    "histogram_quantile", "by", "without", "and", "or", "unless", "on", "ignoring",
    "group_left", "group_right", "offset", "bool", "absent", "clamp_min", "clamp_max",
    "topk", "bottomk", "vector", "scalar", "time", "abs", "changes", "resets",
}  # fmt: skip


def targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) of every query of every panel, rows' panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found.extend((inner["title"], t["expr"]) for t in inner.get("targets", []))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: what is left once strings, label matchers,
    groupings, ranges, numbers and PromQL's own words are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return words - WORDS


def unexported(dashboard: dict[str, Any], exported: set[str]) -> list[tuple[str, str]]:
    """(panel title, metric) of every metric a panel names that is not exported."""
    return [
        (title, name)
        for title, expr in targets(dashboard)
        for name in sorted(metric_names(expr) - exported)
    ]


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_every_panel_reads_only_metrics_we_export(scraped: list[Sample]) -> None:
    dashboard = load()
    assert all(metric_names(expr) for _title, expr in targets(dashboard))
    assert unexported(dashboard, {s.name for s in scraped}) == []


def test_a_panel_naming_a_metric_we_do_not_export_is_reported(scraped: list[Sample]) -> None:
    dashboard = copy.deepcopy(load())
    dashboard["panels"].append({
        "title": "Renamed", "targets": [{"expr": 'sum(rate(celery_singleton_beat_sent_total'
                                                  '{entry="a"}[5m])) / ignoring(x) up'}],
    })  # fmt: skip
    found = unexported(dashboard, {s.name for s in scraped})
    assert found == [("Renamed", "celery_singleton_beat_sent_total"), ("Renamed", "up")]


def test_every_panel_expression_is_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"panel:{index}", "expr": expr}
        for index, (_title, expr) in enumerate(targets(load()))
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

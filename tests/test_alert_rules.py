"""The alert rules that ship (``examples/deploy/prometheus``), checked by ``promtool test
rules`` against series recorded from the library's own ``/metrics``: each rule fires on
its failure mode and stays silent when all is well, on the metric names, labels and
values a real beat replica (and a worker's singleton task) exported in this test.

``promtool`` comes with Debian's ``prometheus`` package (``make promtool`` installs it);
without it this test fails, saying so: it never skips.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from tests.support.promtool import promtool
from tests.support.scraped import Sample

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "examples" / "deploy" / "prometheus" / "singleton-beat-alerts.yml"
#: The labels a scrape adds to every series.
TARGETS = {"job": "singleton-beat"}


class Series(NamedTuple):
    """One input series: a scraped sample's name (and labels, when ``match`` picks one),
    on the target ``instance``, with its values when failing and when all is well; in
    values, ``{v}`` is the scraped value."""

    name: str
    failing: str
    healthy: str
    instance: str = "r1:8099"
    match: dict[str, str] = {}  # noqa: RUF012  (a NamedTuple default, never changed)


class Case(NamedTuple):
    series: list[Series]
    labels: list[str]
    """The labels of the scraped sample the alert keeps (besides ``instance``)."""
    at: str = "20m"
    instance: bool = False
    """Whether the alert keeps the ``instance`` label of the failing series."""


BUMP = "{v}x5 {v}+1x15"  # a counter that grows from 5 minutes on
FLAT = "{v}x20"
CASES = {
    "SingletonBeatNoReplicaReady": Case(
        [
            Series("quorum_reachable", "0x20", "1x20"),
            Series("quorum_reachable", "0x20", "0x20", instance="r2:8099"),
        ],
        [],
    ),
    "SingletonBeatQuorumLost": Case(
        [
            Series("quorum_reachable", "0x20", "1x20", instance="r2:8099"),
            Series("quorum_reachable", "1x20", "1x20"),
        ],
        [],
        instance=True,
    ),
    "SingletonBeatReplicasLow": Case([Series("replicas", "1x20", "3x20")], []),
    "SingletonBeatSlotsMissed": Case(
        [Series("slots_skipped_total", BUMP, FLAT, match={"entry": "late"})], ["entry", "reason"]
    ),
    "SingletonBeatDuplicatesDropped": Case(
        [Series("duplicates_prevented_total", BUMP, FLAT)], ["task"]
    ),
    "SingletonBeatLockContentionRising": Case(
        # 0.1 a second for 20 minutes after an hour of none; all well: 0.1 a second always
        [Series("lock_contention_total", "{v}x70 {v}+6x20", "{v}+6x90")],
        ["task"],
        at="88m",
    ),
    "SingletonBeatLockLost": Case([Series("lock_lost_total", BUMP, FLAT)], ["task"]),
    "SingletonBeatEntryConflict": Case([Series("entry_conflicts", "1x20", "{v}x20")], []),
    "SingletonBeatEntryPaused": Case([Series("paused_entries", "{v}x90", "0x90")], [], at="70m"),
}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_rule_reads_only_metrics_beat_and_workers_export_and_has_a_case(
    scraped: list[Sample],
) -> None:
    exported = {s.name for s in scraped}
    for rule in rules():
        named = set(re.findall(r"celery_singleton_beat_\w+", rule["expr"]))
        assert named, rule["alert"]
        assert named <= exported, f"{rule['alert']} names {sorted(named - exported)}"
    assert sorted(CASES) == sorted(rule["alert"] for rule in rules())


def test_promtool_fires_each_rule_on_its_failure_and_none_when_all_is_well(
    scraped: list[Sample], tmp_path: Path
) -> None:
    tool = promtool()
    tests = []
    for alert, case in CASES.items():
        rule = next(r for r in rules() if r["alert"] == alert)
        picked = [_sample(scraped, s) for s in case.series]
        firing = [
            _input(s, sample, s.failing) for s, sample in zip(case.series, picked, strict=True)
        ]
        healthy = [
            _input(s, sample, s.healthy) for s, sample in zip(case.series, picked, strict=True)
        ]
        kept = {k: picked[0].labels[k] for k in case.labels}
        if case.instance:
            kept["instance"] = case.series[0].instance
        annotations = {k: _expand(v, kept) for k, v in rule["annotations"].items()}
        expected = {"exp_labels": {**rule["labels"], **kept}, "exp_annotations": annotations}
        tests.append(_test(firing, alert, case.at, [expected]))
        tests.append(_test(healthy, alert, case.at, []))
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "singleton-beat-alerts.test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [tool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _sample(scraped: list[Sample], series: Series) -> Sample:
    name = "celery_singleton_beat_" + series.name
    found = [s for s in scraped if s.name == name and series.match.items() <= s.labels.items()]
    assert found, f"/metrics exported no sample of {name} {series.match}"
    return found[0]


def _input(series: Series, sample: Sample, values: str) -> dict[str, str]:
    labels = {**sample.labels, **TARGETS, "instance": series.instance}
    text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{sample.name}{{{text}}}", "values": values.format(v=int(sample.value))}


def _test(
    series: list[dict[str, str]], alert: str, at: str, expected: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
    }


def _expand(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus expands it (the rules use ``{{ $labels.x }}`` only)."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)

"""The deployment examples are valid YAML and probe the right endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "examples" / "deploy"


def test_the_compose_file_runs_three_beat_replicas_with_a_health_check() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    beat = compose["services"]["beat"]
    assert beat["command"][-5:-2] == ["beat", "-S", "singleton"]
    assert beat["deploy"]["replicas"] == 3
    assert "/healthz" in " ".join(beat["healthcheck"]["test"])
    assert {"redis-1", "redis-2", "redis-3"} <= set(compose["services"])


def kubernetes(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]


def test_the_kubernetes_beat_deployment_has_liveness_and_readiness_probes() -> None:
    deployment, budget = kubernetes("beat.yaml")
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == 8099
    assert budget["kind"] == "PodDisruptionBudget"


def test_the_kubernetes_masters_are_three_independent_redis_servers() -> None:
    service, statefulset = kubernetes("redis-masters.yaml")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["replicas"] == 3
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert "noeviction" in container["args"]

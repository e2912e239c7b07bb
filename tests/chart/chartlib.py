"""Render the chart with Helm's own engine (helm-python-sdk) and split the output into manifests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "spaceport"
RELEASE = "spaceport"
NAMESPACE = "spaceport-system"
KUBE_VERSIONS = ("1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0")

# Value sets every structural test runs over: defaults plus each non-default switch.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"rbac": {"clusterWide": False, "watchNamespaces": ["drones", "surveys"]}},
    "namespaced-release-ns": {"rbac": {"clusterWide": False}},
    "single-replica": {"operator": {"replicas": 1}},
    "three-replicas": {"operator": {"replicas": 3}},
    "gpu-pool": {
        "stages": {
            "train": {
                "image": "registry.example/spaceport-stage:0.1.0-cuda",
                "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
                "resources": {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"memory": "48Gi"}},
                "gpus": 2,
            },
            "sfm": {"resources": {"requests": {"cpu": 16, "memory": "32Gi"}}, "gpus": 0},
        }
    },
    "cpu-only": {"stages": {"train": {"gpus": 0, "tolerations": []}}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "credentials-secret": {
        "storage": {
            "credentialsSecret": {
                "name": "spaceport-s3", "create": True, "accessKeyId": "AKIAEXAMPLE",
                "secretAccessKey": "example-secret", "endpointUrl": "http://minio.storage:9000", "region": "us-east-1",
            }
        }
    },
}


@lru_cache(maxsize=1)
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def render_files(values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every manifest the templates produce (NOTES.txt and empty documents left out)."""
    docs: list[dict[str, Any]] = []
    for name, text in sorted(render_files(values).items()):
        if name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def crd_documents() -> list[dict[str, Any]]:
    return [d for f in chart().crds for d in yaml.safe_load_all(f["data"]) if d]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal environment (downward-API entries left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}

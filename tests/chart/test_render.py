"""The chart renders with Helm's engine, lints clean and every manifest is valid Kubernetes 1.29-1.34."""

from __future__ import annotations

from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from spaceport.crd import CRD_FILE, to_json_schema
from tests.chart.chartlib import (
    CHART,
    KUBE_VERSIONS,
    ROOT,
    VARIANTS,
    crd_documents,
    of_kind,
    only,
    render,
)

# Kinds no Kubernetes release ships: checked against their own CRD schemas below instead.
CUSTOM_API_GROUPS = ("kopf.dev/", "monitoring.coreos.com/")


def _validate(doc: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version} at {where}: "
                    f"{e.message}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_validates_strictly_for_each_kubernetes_version(variant: str) -> None:
    docs = render(VARIANTS[variant])
    builtin = [d for d in docs if not d["apiVersion"].startswith(CUSTOM_API_GROUPS)]
    assert {"ServiceAccount", "StatefulSet", "Service"} <= {d["kind"] for d in builtin}
    for version in KUBE_VERSIONS:
        for doc in builtin:
            _validate(doc, version)


def test_strict_validation_catches_a_misspelt_field() -> None:
    # Guards the test above: strict mode must reject unknown fields, or it proves nothing.
    sts = only(render(), "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="securityContxt"):
        kubernetes_validate.validate(sts, KUBE_VERSIONS[0], strict=True)


def test_crds_validate_and_peering_objects_match_their_crd() -> None:
    crds = crd_documents()
    assert {c["metadata"]["name"] for c in crds} == {
        "reconstructions.spaceport.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev",
    }
    for version in KUBE_VERSIONS:
        for crd in crds:
            _validate(crd, version)
    by_kind = {c["spec"]["names"]["kind"]: c for c in crds}
    for variant in ("default", "namespaced"):
        for doc in render(VARIANTS[variant]):
            if doc["apiVersion"] != "kopf.dev/v1":
                continue
            crd = by_kind[doc["kind"]]
            jsonschema.validate(doc, to_json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
            assert ("namespace" in doc["metadata"]) == (crd["spec"]["scope"] == "Namespaced")


def test_chart_crd_is_byte_identical_to_the_generated_one() -> None:
    chart_copy = (CHART / "crds" / CRD_FILE).read_bytes()
    assert chart_copy == (ROOT / "crds" / CRD_FILE).read_bytes(), "run `make crd`"


@pytest.mark.parametrize("kube_version", [f"v{v}" for v in KUBE_VERSIONS])
def test_strict_lint_is_clean(kube_version: str) -> None:
    ci_values = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "ci").glob("*-values.yaml"))]
    assert ci_values
    for values in [VARIANTS[v] for v in ("default", "namespaced", "gpu-pool", "service-monitor")] + ci_values:
        report = helm_python.lint(CHART, values, strict=True, kube_version=kube_version)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, (values, report)


def test_service_monitor_scrapes_the_metrics_service() -> None:
    docs = render(VARIANTS["service-monitor"])
    monitor = only(docs, "ServiceMonitor")
    metrics = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics"))
    labels = metrics["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["metadata"]["labels"]["release"] == "prom"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in metrics["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert not of_kind(render(), "ServiceMonitor"), "ServiceMonitor needs the Prometheus Operator: off by default"


def test_metrics_service_reaches_the_operator_port() -> None:
    docs = render({"metrics": {"port": 9464}})
    sts = only(docs, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in container["ports"]
    for svc in of_kind(docs, "Service"):
        assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


def test_credentials_secret_is_created_only_on_request() -> None:
    assert not of_kind(render(), "Secret")
    secret = only(render(VARIANTS["credentials-secret"]), "Secret")
    assert secret["metadata"]["name"] == "spaceport-s3"
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"}

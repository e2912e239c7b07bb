"""The chart agrees with the operator's code: RBAC covers every API call it makes, probes hit its endpoint."""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any
from urllib.parse import urlsplit

import helm_python
import pytest

import spaceport.controller.handlers as handlers
import spaceport.controller.k8s as k8s
from spaceport.controller.settings import OperatorSettings
from tests.chart.chartlib import ROOT, VARIANTS, of_kind, only, operator_container, plain_env, render

# kubernetes-client method prefix -> RBAC verb.
VERBS = {"read": "get", "get": "get", "list": "list", "create": "create", "patch": "patch", "delete": "delete",
         "replace": "update", "watch": "watch"}
# kubernetes-client method suffix -> (API group, resource).
RESOURCES = {
    "namespaced_job": ("batch", "jobs"),
    "namespaced_pod": ("", "pods"),
    "namespaced_secret": ("", "secrets"),
    "namespaced_event": ("", "events"),
    "namespaced_custom_object": ("spaceport.dev", "reconstructions"),
    "namespaced_custom_object_status": ("spaceport.dev", "reconstructions/status"),
}


def client_calls() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every kubernetes-client call in controller/k8s.py."""
    calls = set()
    for node in ast.walk(ast.parse(inspect.getsource(k8s))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and node.value.attr in ("core", "batch", "custom"):
            verb, _, rest = node.attr.partition("_")
            assert verb in VERBS and rest in RESOURCES, f"k8s.py calls {node.attr}: teach this test its RBAC"
            calls.add((*RESOURCES[rest], VERBS[verb]))
    return calls


def kopf_needs() -> set[tuple[str, str, str]]:
    """What kopf itself does for the handlers in controller/handlers.py."""
    source = inspect.getsource(handlers)
    needs = {("spaceport.dev", "reconstructions", v) for v in ("list", "watch", "patch")}  # finalizer, annotations
    if re.search(r'kopf\.on\.\w+\("batch", "v1", "jobs"', source):
        needs |= {("batch", "jobs", "list"), ("batch", "jobs", "watch")}
    needs.add(("", "events", "create"))  # kopf posts handler failures as Events
    return needs


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


@pytest.mark.parametrize(("variant", "kind"), [("default", "ClusterRole"), ("namespaced", "Role")])
def test_rbac_covers_every_call_the_operator_makes(variant: str, kind: str) -> None:
    needed = client_calls() | kopf_needs()
    assert ("", "secrets", "get") in needed and ("batch", "jobs", "create") in needed  # the scan works
    for role in of_kind(render(VARIANTS[variant]), kind):
        missing = needed - granted(role)
        assert not missing, f"{kind} lacks {sorted(missing)}"


def test_rbac_grants_nothing_the_operator_does_not_use() -> None:
    peering = {("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")}
    crd_watch = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    extra = granted(only(render(), "ClusterRole")) - client_calls() - kopf_needs() - peering - crd_watch
    assert not extra, f"granted but never used: {sorted(extra)}"


def test_probes_hit_the_operators_liveness_endpoint() -> None:
    for values in ({}, {"operator": {"healthPort": 8181}, "metrics": {"port": 8080}}):
        container = operator_container(render(values))
        endpoint = OperatorSettings.from_env(plain_env(container)).health_endpoint
        assert endpoint, "the chart must leave the operator's liveness endpoint on"
        url = urlsplit(endpoint)
        assert url.hostname == "0.0.0.0", "kubelet probes come from outside the Pod's loopback"
        assert {"name": "health", "containerPort": url.port, "protocol": "TCP"} in container["ports"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": url.path, "port": "health"}


def test_metrics_port_may_not_take_the_liveness_port() -> None:
    with pytest.raises(helm_python.HelmError, match=r"metrics\.port 8080 is taken"):
        render({"metrics": {"port": 8080}})


# Downward-API variables: they feed the command line (--priority), not the settings.
DOWNWARD = {"SPACEPORT_POD_INDEX"}


def test_chart_sets_every_setting_the_operator_reads() -> None:
    import spaceport.controller.settings as settings_module

    read = set(re.findall(r'"(SPACEPORT_[A-Z_]+)"', inspect.getsource(settings_module.OperatorSettings.from_env)))
    assert "SPACEPORT_STAGE_IMAGE" in read  # the scan works
    env = {e["name"] for e in operator_container(render(VARIANTS["credentials-secret"]))["env"]}
    # SPACEPORT_NAMESPACE is the fallback when the command line names no namespace; the chart always does.
    assert read - env <= {"SPACEPORT_NAMESPACE"}, f"the chart never sets {sorted(read - env - {'SPACEPORT_NAMESPACE'})}"
    unknown = env - read - DOWNWARD
    assert not unknown, f"the chart sets {sorted(unknown)}, which the operator does not read"
    readme = (ROOT / "charts" / "spaceport" / "README.md").read_text()
    for name in env - DOWNWARD:
        assert name in readme, f"{name} is not documented in the chart README"

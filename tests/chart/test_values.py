"""What the values turn into: HA wiring, RBAC scope, stage pools as operator settings, Pod security."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import yaml

from spaceport.cli import build_parser
from spaceport.controller.settings import DEFAULT_STAGE_IMAGE, OperatorSettings
from tests.chart.chartlib import NAMESPACE, VARIANTS, chart, of_kind, only, operator_container, plain_env, render


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of container args."""
    for name, value in env.items():
        arg = arg.replace(f"$({name})", value)
    return arg


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_each_replica_gets_a_distinct_peering_priority(replicas: int) -> None:
    docs = render({"operator": {"replicas": replicas}})
    sts = only(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == replicas
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    index_env = next(e for e in container["env"] if e["name"] == "SPACEPORT_POD_INDEX")
    assert index_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    priorities = []
    for ordinal in range(replicas):
        args = [_expand(a, {"SPACEPORT_POD_INDEX": str(ordinal)}) for a in container["args"]]
        parsed = build_parser().parse_args(args)  # the operator's own command line accepts them
        assert not parsed.standalone and parsed.peering == "spaceport"
        priorities.append(parsed.priority)
    assert len(set(priorities)) == replicas, priorities
    assert max(priorities) == priorities[0], "pod-0 leads, so scale-down and rollouts leave the leader alone"


def test_disruption_budget_only_with_standbys() -> None:
    assert not of_kind(render({"operator": {"replicas": 1}}), "PodDisruptionBudget")
    pdb = only(render(), "PodDisruptionBudget")
    sts = only(render(), "StatefulSet")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]


def _rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_cluster_wide_rbac_is_one_cluster_role_with_least_privilege() -> None:
    docs = render()
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    rules = _rules(only(docs, "ClusterRole"))
    assert rules[("", "secrets")] == {"get"}, "credentials are read by name; never list or watch Secrets"
    assert rules[("batch", "jobs")] == {"get", "list", "watch", "create", "patch", "delete"}
    assert rules[("spaceport.dev", "reconstructions/status")] == {"patch"}
    assert rules[("", "pods")] == {"list"} and rules[("", "events")] == {"create"}
    assert rules[("kopf.dev", "clusterkopfpeerings")] == {"get", "list", "watch", "patch"}
    assert "update" not in rules[("spaceport.dev", "reconstructions")]
    assert not any("*" in verbs or "*" in res for (_, res), verbs in rules.items())
    binding = only(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spaceport", "namespace": NAMESPACE}]
    assert "--all-namespaces" in operator_container(docs)["args"]
    assert only(docs, "ClusterKopfPeering")["metadata"]["name"] == "spaceport"


def test_namespaced_rbac_grants_only_the_watched_namespaces() -> None:
    docs = render(VARIANTS["namespaced"])
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["drones", "surveys"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(docs, "RoleBinding")) == ["drones", "surveys"]
    assert ("kopf.dev", "kopfpeerings") in _rules(roles[0])
    assert sorted(p["metadata"]["namespace"] for p in of_kind(docs, "KopfPeering")) == ["drones", "surveys"]
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args
    parsed = build_parser().parse_args([_expand(a, {"SPACEPORT_POD_INDEX": "0"}) for a in args])
    assert parsed.namespace == ["drones", "surveys"]
    default_ns = render(VARIANTS["namespaced-release-ns"])
    assert [r["metadata"]["namespace"] for r in of_kind(default_ns, "Role")] == [NAMESPACE]


def test_default_settings_are_what_the_operator_reads() -> None:
    env = plain_env(operator_container(render()))
    settings = OperatorSettings.from_env(env)  # raises SettingsError on anything it can't use
    assert settings.stage_image == DEFAULT_STAGE_IMAGE
    assert settings.resources_for("train")["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in settings.resources_for("sfm").get("limits", {})
    assert settings.job_ttl_seconds == 86400 and settings.progress_interval_s == 5.0


def test_gpu_pool_overrides_reach_the_operator() -> None:
    env = plain_env(operator_container(render(VARIANTS["gpu-pool"])))
    settings = OperatorSettings.from_env(env)
    train = settings.resources_for("train")
    assert train["limits"] == {"memory": "48Gi", "nvidia.com/gpu": 2}
    assert train["requests"] == {"cpu": "8", "memory": "32Gi"}
    assert settings.resources_for("sfm")["requests"]["cpu"] == 16
    pools = json.loads(env["SPACEPORT_STAGE_POOLS"])
    assert pools["train"]["image"] == "registry.example/spaceport-stage:0.1.0-cuda"
    assert pools["train"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pools["train"]["tolerations"][0]["key"] == "dedicated"
    assert pools["sfm"]["image"] == DEFAULT_STAGE_IMAGE, "pools without an image use stageImage"
    cpu = OperatorSettings.from_env(plain_env(operator_container(render(VARIANTS["cpu-only"]))))
    assert "nvidia.com/gpu" not in cpu.resources_for("train").get("limits", {})


def test_changing_settings_rolls_the_operator() -> None:
    # Settings are read once at start-up; they live in the Pod template, so a change rolls the replicas.
    def template(values: dict[str, Any]) -> dict[str, Any]:
        return only(render(values), "StatefulSet")["spec"]["template"]

    assert template({}) == template({})
    assert template({}) != template({"stages": {"train": {"gpus": 4}}})
    assert template({}) != template({"settings": {"jobTtlSeconds": 60}})


@pytest.mark.parametrize("variant", ["default", "gpu-pool", "namespaced"])
def test_restricted_pod_security_standard(variant: str) -> None:
    pod = only(render(VARIANTS[variant]), "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for volume in pod["volumes"]:
        assert set(volume) <= {"name", "emptyDir", "configMap", "secret", "projected", "downwardAPI"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert not sc.get("privileged")
        assert any(m["mountPath"] == "/scratch" for m in c["volumeMounts"]), "HOME/TMPDIR need a writable mount"


BAD_VALUES = [
    ({"operator": {"replicas": 0}}, "/operator/replicas", "minimum"),
    ({"operator": {"replcas": 2}}, "/operator", "'replcas' not allowed"),
    ({"stages": {"train": {"gpus": -1}}}, "/stages/train/gpus", "minimum"),
    ({"stages": {"train": {"resources": {"limits": {"memory": "lots"}}}}}, "/stages/train/resources/limits/memory",
     "'lots' does not match"),
    ({"stages": {"gpu": {"gpus": 1}}}, "/stages", "'gpu' not allowed"),
    ({"securityContext": {"allowPrivilegeEscalation": True}}, "/securityContext/allowPrivilegeEscalation", "false"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot", "true"),
    ({"rbac": {"clusterWide": False, "watchNamespaces": ["Bad_NS"]}}, "/rbac/watchNamespaces/0", "Bad_NS"),
    ({"settings": {"progressIntervalSeconds": 30}}, "/settings/progressIntervalSeconds", "maximum"),
    ({"metrics": {"port": 80}}, "/metrics/port", "minimum"),
    ({"stageImage": {"pullPolicy": "Sometimes"}}, "/stageImage/pullPolicy", "one of 'Always'"),
]


@pytest.mark.parametrize(("values", "where", "why"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_schema_rejects_bad_values_naming_the_field(values: dict[str, Any], where: str, why: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as info:
        render(values)
    message = str(info.value)
    assert f"at '{where}'" in message and why in message, message


def test_created_secret_needs_its_keys() -> None:
    with pytest.raises(helm_python.HelmError, match="secretAccessKey is required"):
        render({"storage": {"credentialsSecret": {"name": "s3", "create": True, "accessKeyId": "AKIA"}}})


def test_long_release_names_stay_within_kubernetes_limits() -> None:
    files = chart().render({}, name="r" * 53, namespace=NAMESPACE, is_install=True)  # Helm's longest
    docs = [d for name, text in files.items() if name.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
    assert len(only(docs, "StatefulSet")["metadata"]["name"]) <= 52, "room for the controller-revision-hash"

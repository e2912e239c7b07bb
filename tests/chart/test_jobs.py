"""The Jobs the operator builds from the chart's settings and the examples are valid on Kubernetes 1.29-1.34."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from spaceport.api import STAGES, ReconstructionSpec
from spaceport.controller.jobs import Owner, Part, build_job
from spaceport.controller.settings import OperatorSettings
from tests.chart.chartlib import KUBE_VERSIONS, ROOT, VARIANTS, operator_container, plain_env, render

EXAMPLES = [ROOT / "examples" / "reconstruction.yaml", ROOT / "examples" / "gpu-pool.yaml",
            ROOT / "examples" / "gitops" / "base" / "reconstructions" / "site-001.yaml"]


def _settings(values: dict[str, Any]) -> OperatorSettings:
    return OperatorSettings.from_env(plain_env(operator_container(render(values))))


def _jobs(example: Path, settings: OperatorSettings) -> list[dict[str, Any]]:
    manifest = yaml.safe_load(example.read_text())
    spec = ReconstructionSpec.model_validate(manifest["spec"])
    owner = Owner(name=manifest["metadata"]["name"], namespace="surveys", uid="0f9d7c3e-5b1a-4c55-9a53-7d1f0c2e8b11")
    return [build_job(owner, spec, 1, stage, settings) for stage in STAGES]


def validate_strictly(job: dict) -> None:
    """The built Job against every Kubernetes version the chart supports, unknown fields refused."""
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(job, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{job['metadata']['name']} invalid for {version} at {'/'.join(map(str, e.path))}: "
                        f"{e.message}")


@pytest.mark.parametrize("variant", ["default", "gpu-pool", "cpu-only"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_stage_jobs_validate_strictly(variant: str, example: Path) -> None:
    for job in _jobs(example, _settings(VARIANTS[variant])):
        validate_strictly(job)


def test_chart_gpu_pool_reaches_the_train_job() -> None:
    example = ROOT / "examples" / "gitops" / "base" / "reconstructions" / "site-001.yaml"  # names no resources
    sfm, train, _ = _jobs(example, _settings(VARIANTS["gpu-pool"]))
    train_limits = train["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert train_limits["nvidia.com/gpu"] == 2
    assert "nvidia.com/gpu" not in sfm["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    _, cpu_train, _ = _jobs(example, _settings(VARIANTS["cpu-only"]))
    limits = cpu_train["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in limits


def test_stage_pods_meet_the_restricted_pod_security_standard() -> None:
    for job in _jobs(ROOT / "examples" / "gpu-pool.yaml", _settings({})):
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        [container] = pod["containers"]
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert container["command"][:2] == ["spaceport", "stage"], "the stage image's console script"
        assert any(m["mountPath"] == "/scratch" for m in container["volumeMounts"])


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def test_chart_pools_place_stage_pods_unless_the_reconstruction_says_otherwise() -> None:
    settings = _settings(VARIANTS["gpu-pool"])
    site = ROOT / "examples" / "gitops" / "base" / "reconstructions" / "site-001.yaml"  # no scheduling
    sfm, train, compress = _jobs(site, settings)
    assert _pod(train)["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert _pod(train)["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                          "effect": "NoSchedule"}]
    assert _pod(train)["containers"][0]["image"] == "registry.example/spaceport-stage:0.1.0-cuda"
    assert _pod(sfm)["containers"][0]["image"] == settings.stage_image
    assert "nodeSelector" not in _pod(compress)
    # examples/gpu-pool.yaml names its own A100 pool: the spec wins over the chart's pool.
    _, own_train, _ = _jobs(ROOT / "examples" / "gpu-pool.yaml", settings)
    assert _pod(own_train)["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}


def test_default_credentials_secret_reaches_stages_of_reconstructions_naming_none() -> None:
    settings = _settings(VARIANTS["credentials-secret"])
    manifest = yaml.safe_load((ROOT / "examples" / "reconstruction.yaml").read_text())
    for side in ("input", "output"):
        manifest["spec"][side].pop("credentialsSecret")
    spec = ReconstructionSpec.model_validate(manifest["spec"])
    job = build_job(Owner(name="quarry", namespace="surveys", uid="0f9d7c3e-5b1a-4c55-9a53-7d1f0c2e8b11"),
                    spec, 1, "sfm", settings)
    assert _pod(job)["containers"][0]["envFrom"] == [{"secretRef": {"name": "spaceport-s3", "optional": True}}]
    kubernetes_validate.validate(job, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("variant", ["default", "gpu-pool"])
def test_partitioned_training_jobs_validate_strictly(variant: str) -> None:
    """The blocks' Indexed Job (completionMode, backoffLimitPerIndex, FailIndex) and their merge Job."""
    manifest = yaml.safe_load((ROOT / "examples" / "reconstruction.yaml").read_text())
    manifest["spec"]["train"] = {**manifest["spec"].get("train", {}), "blocks": 4}
    spec = ReconstructionSpec.model_validate(manifest["spec"])
    owner = Owner(name="quarry", namespace="surveys", uid="0f9d7c3e-5b1a-4c55-9a53-7d1f0c2e8b11")
    settings = _settings(VARIANTS[variant])
    for part in (Part(4), Part(4, merge=True)):
        job = build_job(owner, spec, 1, "train", settings, part=part)
        validate_strictly(job)

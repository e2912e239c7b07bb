"""Every example manifest is a valid Reconstruction: CRD schema (as the API server checks) and the API model."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from spaceport.api import ReconstructionSpec
from spaceport.controller.settings import OperatorSettings
from tests.chart.chartlib import ROOT, operator_container, plain_env, render

GITOPS = ROOT / "examples" / "gitops"
OVERLAY = GITOPS / "overlays" / "production"


@pytest.fixture(scope="module")
def crd_schema() -> dict[str, Any]:
    from spaceport.crd import crd_json_schema

    return crd_json_schema()


def _check(manifest: dict[str, Any], schema: dict[str, Any]) -> ReconstructionSpec:
    jsonschema.validate(manifest, schema)
    assert manifest["kind"] == "Reconstruction" and manifest["apiVersion"] == "spaceport.dev/v1alpha1"
    return ReconstructionSpec.model_validate(manifest["spec"])


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


SINGLE = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", SINGLE, ids=lambda p: p.name)
def test_top_level_examples_are_valid(path: Path, crd_schema: dict[str, Any]) -> None:
    # kind.sh dry-runs this whole folder against a real API server: it must hold Reconstructions only.
    manifests = _load_all(path)
    assert manifests
    for manifest in manifests:
        _check(manifest, crd_schema)


def test_the_examples_the_docs_name_exist() -> None:
    assert {"reconstruction.yaml", "gpu-pool.yaml"} <= {p.name for p in SINGLE}


def test_gpu_pool_example_asks_for_a_gpu_on_the_tainted_pool(crd_schema: dict[str, Any]) -> None:
    [manifest] = _load_all(ROOT / "examples" / "gpu-pool.yaml")
    train = _check(manifest, crd_schema).train.scheduling
    assert train.resources is not None and train.resources.limits["nvidia.com/gpu"] == 1
    assert train.node_selector and {t.key for t in train.tolerations} >= {"nvidia.com/gpu"}


def test_generator_output_is_committed_unchanged(tmp_path: Path) -> None:
    from examples.gitops.generate import write_batch

    written = write_batch(tmp_path, 50)
    assert len(written) == 51
    for path in written:
        committed = GITOPS / "base" / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} differs: rerun examples/gitops/generate.py"
    committed_files = {p.relative_to(GITOPS / "base") for p in (GITOPS / "base").rglob("*.yaml")}
    assert committed_files == {p.relative_to(tmp_path) for p in written}, "stale files in examples/gitops/base"


def _base_manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((GITOPS / "base" / "kustomization.yaml").read_text())
    return [m for r in kustomization["resources"] for m in _load_all(GITOPS / "base" / r)]


def test_batch_has_50_distinct_valid_reconstructions(crd_schema: dict[str, Any]) -> None:
    manifests = _base_manifests()
    assert len(manifests) == 50
    specs = [_check(m, crd_schema) for m in manifests]
    assert len({m["metadata"]["name"] for m in manifests}) == 50
    assert len({s.output.uri for s in specs}) == 50, "two Reconstructions would write to one place"


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: what kustomize does with a patch file on a custom resource."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _overlay_by_hand() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    [patch_ref] = kustomization["patches"]
    patch = yaml.safe_load((OVERLAY / patch_ref["path"]).read_text())
    patch.pop("apiVersion"), patch.pop("kind"), patch["metadata"].pop("name")
    extra_labels = {k: v for entry in kustomization["labels"] for k, v in entry["pairs"].items()}
    out = []
    for manifest in _base_manifests():
        result = _merge_patch(manifest, patch)
        result["metadata"]["namespace"] = kustomization["namespace"]
        result["metadata"]["labels"] = {**result["metadata"].get("labels", {}), **extra_labels}
        out.append(result)
    return out


def test_production_overlay_is_valid_and_puts_training_on_gpus(crd_schema: dict[str, Any]) -> None:
    manifests = _overlay_by_hand()
    assert len(manifests) == 50
    for manifest in manifests:
        spec = _check(manifest, crd_schema)
        assert spec.preset == "high" and manifest["metadata"]["namespace"] == "surveys"
        assert spec.train.scheduling.resources is not None
        assert spec.train.scheduling.resources.limits["nvidia.com/gpu"] == 1
        assert spec.input.uri.endswith(f"/{manifest['metadata']['name']}/"), "the patch must keep each site's input"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="cross-check needs kubectl (kustomize built in)")
def test_kubectl_kustomize_agrees_with_the_hand_applied_overlay() -> None:
    result = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    built = sorted((d for d in yaml.safe_load_all(result.stdout) if d), key=lambda d: d["metadata"]["name"])
    by_hand = sorted(_overlay_by_hand(), key=lambda d: d["metadata"]["name"])
    assert json.dumps(built, sort_keys=True) == json.dumps(by_hand, sort_keys=True)


def test_gpu_pool_chart_values_reach_the_operator() -> None:
    values = yaml.safe_load((ROOT / "charts/spaceport/ci/gpu-pool-values.yaml").read_text())
    env = plain_env(operator_container(render(values)))
    settings = OperatorSettings.from_env(env)
    assert settings.resources_for("train")["limits"]["nvidia.com/gpu"] == 1
    assert settings.resources_for("sfm")["requests"]["cpu"] == "16"
    pools = json.loads(env["SPACEPORT_STAGE_POOLS"])
    assert pools["train"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}

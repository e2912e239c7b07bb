"""Scheduling follows each stage's `device`: GPU requests, node pools and images, every combination."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spaceport.api import ReconstructionSpec
from spaceport.controller.jobs import Owner, build_job
from spaceport.controller.settings import OperatorSettings

OWNER = Owner(name="site", namespace="surveys", uid="u-1")
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# Like the chart's ci/gpu-pool-values.yaml: CPU pools for sfm and compress, an L4 pool for train.
RESOURCES = {"sfm": {"requests": {"cpu": "16"}, "limits": {"memory": "48Gi"}},
             "train": {"requests": {"cpu": "8"}, "limits": {"memory": "48Gi", "nvidia.com/gpu": 2}},
             "compress": {"requests": {"cpu": "8"}, "limits": {"memory": "24Gi"}}}
STAGE_POOLS = {"sfm": {"image": "stage-cpu:1", "nodeSelector": {"pool": "cpu"}},
               "train": {"image": "stage-cuda:1", "nodeSelector": {"pool": "l4"}, "tolerations": [GPU_TAINT]},
               "compress": {"image": "stage-cpu:1", "nodeSelector": {"pool": "cpu-small"}}}
POOLS = OperatorSettings.from_env({"SPACEPORT_STAGE_IMAGE": "stage:1",
                                   "SPACEPORT_DEFAULT_RESOURCES": json.dumps(RESOURCES),
                                   "SPACEPORT_STAGE_POOLS": json.dumps(STAGE_POOLS)})
BUILT_IN = OperatorSettings(stage_image="stage:1")

CPU = {"gpu": None, "pool": "cpu", "image": "stage-cpu:1", "tolerations": None}
L4 = {"gpu": 2, "pool": "l4", "image": "stage-cuda:1", "tolerations": [GPU_TAINT]}


def pod_of(stage: str, device: str | None, settings: OperatorSettings) -> dict[str, Any]:
    section = {"device": device} if device else {}
    spec = ReconstructionSpec.model_validate({"input": {"uri": "s3://p/site"}, "output": {"uri": "s3://r/site"},
                                              stage: section})
    return build_job(OWNER, spec, 1, stage, settings)["spec"]["template"]["spec"]


def placed(pod: dict[str, Any]) -> dict[str, Any]:
    container = pod["containers"][0]
    return {"gpu": container["resources"].get("limits", {}).get("nvidia.com/gpu"),
            "pool": (pod.get("nodeSelector") or {}).get("pool"), "image": container["image"],
            "tolerations": pod.get("tolerations")}


@pytest.mark.parametrize(("stage", "device", "expected", "cpu"), [
    ("sfm", None, CPU, "16"),
    ("train", "auto", L4, "8"),
    ("train", "cuda", L4, "8"),
    ("train", "cpu", CPU, "8"),  # the issue: a CPU run asked for a GPU
    ("compress", "auto", {**CPU, "pool": "cpu-small"}, "8"),
    ("compress", "cpu", {**CPU, "pool": "cpu-small"}, "8"),
    ("compress", "cuda", L4, "8"),  # the issue: it got no GPU and failed
])
def test_device_picks_gpu_pool_and_image(stage: str, device: str | None, expected: dict[str, Any], cpu: str) -> None:
    pod = pod_of(stage, device, POOLS)
    assert placed(pod) == expected
    assert pod["containers"][0]["resources"]["requests"]["cpu"] == cpu  # the stage's own size, wherever it runs


@pytest.mark.parametrize(("stage", "device", "gpu", "tolerations"), [
    ("sfm", None, None, None),
    ("train", "auto", 1, [GPU_TAINT]),
    ("train", "cuda", 1, [GPU_TAINT]),
    ("train", "cpu", None, None),
    ("compress", "auto", None, None),
    ("compress", "cpu", None, None),
    ("compress", "cuda", 1, [GPU_TAINT]),
])
def test_device_with_built_in_defaults(stage: str, device: str | None, gpu: int | None,
                                       tolerations: list[dict[str, str]] | None) -> None:
    result = placed(pod_of(stage, device, BUILT_IN))
    assert (result["gpu"], result["tolerations"], result["image"]) == (gpu, tolerations, "stage:1")


def test_explicit_scheduling_still_wins_over_device() -> None:
    spec = ReconstructionSpec.model_validate({
        "input": {"uri": "s3://p/site"}, "output": {"uri": "s3://r/site"},
        "train": {"device": "cpu", "scheduling": {"image": "mine:1", "nodeSelector": {"pool": "mine"},
                                                  "resources": {"limits": {"memory": "1Gi"}}}}})
    pod = build_job(OWNER, spec, 1, "train", POOLS)["spec"]["template"]["spec"]
    assert placed(pod) == {"gpu": None, "pool": "mine", "image": "mine:1", "tolerations": None}

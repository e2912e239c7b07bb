"""CUDA path: gsplat's rasterizer agrees with our CPU one, and the stage trains on the GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from spaceport.stages.runner import run_stage
from spaceport.stages.train.rasterize import rasterize
from tests.train.fixtures import write_sfm_output
from tests.train.test_rasterizer import camera, random_scene

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_gsplat_matches_cpu_rasterizer() -> None:
    means, quats, scales, opacities, sh = (p.detach() for p in random_scene(300, torch.float32))
    view, K = camera(torch.float32)
    cpu, _, _ = rasterize(means, quats, scales, opacities, sh, view, K, 50, 40, 3)
    gpu, _, _ = rasterize(*(t.cuda() for t in (means, quats, scales, opacities, sh, view, K)), 50, 40, 3)
    assert float((gpu.cpu() - cpu).abs().max()) < 2e-3


@pytest.mark.parametrize("strategy", ["default", "mcmc"])
def test_stage_trains_on_cuda(tmp_path: Path, strategy: str) -> None:
    write_sfm_output(tmp_path / "sfm")
    result = run_stage("train", str(tmp_path / "sfm"), str(tmp_path / "out"),
                       {"iterations": 300, "device": "cuda", "strategy": strategy, "densifyFrom": 100,
                        "densifyEvery": 50, "holdoutEvery": 4})
    assert result.metrics["device"] == "cuda"
    assert result.metrics["psnr"] > result.metrics["initialPsnr"] + 3
    if importlib.util.find_spec("lpips") is not None:
        assert 0 < result.metrics["lpips"] < 1
    else:
        assert "lpips" not in result.metrics and any("no LPIPS" in w for w in result.warnings)

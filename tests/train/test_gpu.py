"""CUDA path: gsplat's rasterizer agrees with our CPU one, densification really runs on the GPU (both
strategies, fused Adam, the Gaussian cap), checkpoints resume on CUDA and across devices.

Skipped without CUDA (and not counted as passes); `make gpu-check` runs them on a GPU machine. What can be
checked without one is in test_gpu_plan.py: the same schedule's refine passes and cap on the CPU, the
checkpoint format, the LPIPS failure message. Tolerances: tests/train/gpu_plan.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from spaceport.contract import RetryableError
from spaceport.stages.runner import run_stage
from spaceport.stages.train import checkpoint
from spaceport.stages.train.rasterize import rasterize
from spaceport.storage import LocalStore
from tests.train import gpu_plan
from tests.train.test_rasterizer import camera, random_scene
from tests.train.test_stage import sigterm_at

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def sfm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gpu_plan.write_scene(tmp_path_factory.mktemp("sfm"))


def test_gsplat_matches_cpu_rasterizer() -> None:
    means, quats, scales, opacities, sh = (p.detach() for p in random_scene(300, torch.float32))
    view, K = camera(torch.float32)
    cpu, _, cpu_info = rasterize(means, quats, scales, opacities, sh, view, K, 50, 40, 3)
    gpu, _, gpu_info = rasterize(*(t.cuda() for t in (means, quats, scales, opacities, sh, view, K)), 50, 40, 3)
    assert float((gpu.cpu() - cpu).abs().max()) < gpu_plan.CROSS_DEVICE_PIXEL
    # the same visibility for DefaultStrategy (radii > 0): gsplat's opacity-aware rule on both devices. The
    # CPU kernels compute in float64, gsplat in float32 (with a fast log): a radius may differ by a pixel
    # where ceil() meets the rounding, and so, rarely, may a Gaussian right at the image's edge
    cpu_radii, gpu_radii = cpu_info["radii"][0], gpu_info["radii"][0].cpu()
    cpu_seen, gpu_seen = (cpu_radii > 0).all(-1), (gpu_radii > 0).all(-1)
    assert int(cpu_seen.sum()) > 100 and int((cpu_seen != gpu_seen).sum()) <= 3
    both = cpu_seen & gpu_seen
    assert int((cpu_radii[both] - gpu_radii[both]).abs().max()) <= 1


@pytest.mark.parametrize("strategy", ["default", "mcmc"])
def test_densification_runs_on_cuda_to_the_cap(sfm: Path, tmp_path: Path, strategy: str) -> None:
    """Every planned refine step is a pass of gsplat's strategy on CUDA tensors with fused Adam: grow,
    split and prune (DefaultStrategy) or relocate and add (MCMC), up to the cap and never beyond it."""
    trainer = gpu_plan.make_trainer(sfm, tmp_path, "cuda", strategy=strategy)
    assert all(p.is_cuda for p in trainer.params.values())
    assert all(o.defaults["fused"] for o in trainer.optimizers.values())
    initial = trainer.evaluate()[0]
    seen = gpu_plan.watch(trainer)
    gpu_plan.train_watched(trainer, seen)
    assert seen.passes == gpu_plan.REFINE_STEPS
    assert max(seen.counts) == 1000 and all(c <= 1000 for c in seen.counts)
    if strategy == "mcmc":
        assert seen.added == 100 and seen.counts[-1] == 1000 and seen.relocated > 0
    else:
        assert seen.duplicated > 0 and seen.split > 0 and seen.pruned > 0
    assert trainer.evaluate()[0] > initial + 3


def test_blocks_train_and_merge_on_cuda(sfm: Path, tmp_path: Path) -> None:
    """Partitioned training as the Indexed Job's Pods and the merge Job run it, on the GPU."""
    from spaceport.contract import StagePart

    options = {**gpu_plan.SCHEDULE, "device": "cuda", "blocks": 2}
    blocks = [run_stage("train", str(sfm), str(tmp_path), options, part=StagePart(2, i)) for i in range(2)]
    assert all(b.metrics["device"] == "cuda" and b.metrics["psnr"] > b.metrics["initialPsnr"] for b in blocks)
    merged = run_stage("train", str(sfm), str(tmp_path), options, part=StagePart(2))
    m = merged.metrics
    assert m["device"] == "cuda" and m["blocks"] == 2 and m["gaussians"] > 0
    assert m["psnr"] > max(b.metrics["initialPsnr"] for b in blocks) + 3


@pytest.mark.parametrize("strategy", ["default", "mcmc"])
def test_stage_trains_on_cuda(sfm: Path, tmp_path: Path, strategy: str) -> None:
    result = run_stage("train", str(sfm), str(tmp_path / "out"), {**gpu_plan.SCHEDULE, "device": "cuda",
                                                                  "strategy": strategy})
    m = result.metrics
    assert m["device"] == "cuda" and m["steps"] == gpu_plan.SCHEDULE["iterations"]
    assert m["psnr"] > m["initialPsnr"] + 3 and m["gaussians"] <= 1000
    assert m["peakMemoryBytes"] > 0
    if importlib.util.find_spec("lpips") is None:
        assert "lpips" not in m and any("no LPIPS" in w for w in result.warnings)


def test_lpips_is_scored_on_cuda(sfm: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("lpips is not installed (the stage image's gpu extra)")
    result = run_stage("train", str(sfm), str(tmp_path / "out"), {**gpu_plan.SCHEDULE, "device": "cuda",
                                                                  "iterations": 60})
    failure = gpu_plan.lpips_failure(result.metrics, result.warnings)
    if failure is not None:
        pytest.fail(failure)
    assert 0 < result.metrics["lpips"] < 1


def test_sigterm_and_resume_on_cuda_within_tolerance(sfm: Path, tmp_path: Path) -> None:
    config = {**gpu_plan.SCHEDULE, "device": "cuda", "checkpointEvery": 50}
    with pytest.raises(RetryableError, match="step 175"):
        run_stage("train", str(sfm), str(tmp_path / "a"), config, listener=sigterm_at(175))
    resumed = run_stage("train", str(sfm), str(tmp_path / "a"), config)
    straight = run_stage("train", str(sfm), str(tmp_path / "b"), config)
    assert resumed.metrics["resumedFromStep"] == 175 and resumed.metrics["steps"] == 400
    a, b = resumed.metrics, straight.metrics
    assert abs(a["psnr"] - b["psnr"]) <= gpu_plan.RESUME_PSNR_DB, (a, b)
    assert abs(a["gaussians"] - b["gaussians"]) <= gpu_plan.RESUME_GAUSSIANS * b["gaussians"], (a, b)


def test_a_cuda_checkpoint_is_cpu_tensors_and_reloads_exactly(sfm: Path, tmp_path: Path) -> None:
    trainer = gpu_plan.make_trainer(sfm, tmp_path / "a", "cuda", strategy="default")
    gpu_plan.train_watched(trainer, gpu_plan.Watch(), until=120)
    state = trainer.state_dict()
    assert all(t.device.type == "cpu" for t in gpu_plan.tensors(state)) and state["cuda_rng"].numel() > 0
    store = LocalStore(tmp_path / "out")
    checkpoint.save(store, state, trainer.step, "fp")
    loaded, _ = checkpoint.load_latest(store, "fp")
    again = gpu_plan.make_trainer(sfm, tmp_path / "b", "cuda", strategy="default")
    again.load_state_dict(loaded)
    for name, param in trainer.params.items():
        assert torch.equal(again.params[name], param), name
    for name, opt in trainer.optimizers.items():
        mine, theirs = opt.state_dict()["state"][0], again.optimizers[name].state_dict()["state"][0]
        assert all(torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine), name
    assert torch.equal(trainer.strategy_state["grad2d"], again.strategy_state["grad2d"])


@pytest.mark.parametrize("strategy", ["default", "mcmc"])
def test_checkpoints_cross_devices_cpu_to_cuda_and_back(sfm: Path, tmp_path: Path, strategy: str) -> None:
    """CPU to step 120, CUDA to 260, CPU to the end: the same view renders alike on both devices at each
    hand-over, and the run ends within the resume tolerance of a straight CPU run."""
    store = LocalStore(tmp_path / "ckpt")
    hops = [("cpu", 120), ("cuda", 260), ("cpu", gpu_plan.SCHEDULE["iterations"])]
    trainer = None
    for i, (device, until) in enumerate(hops):
        nxt = gpu_plan.make_trainer(sfm, tmp_path / f"hop{i}", device, strategy=strategy)
        if trainer is not None:
            checkpoint.save(store, trainer.state_dict(), trainer.step, "fp")
            state, step = checkpoint.load_latest(store, "fp")
            nxt.load_state_dict(state)
            assert nxt.step == step == trainer.step
            view = trainer.train_views[0]
            with torch.no_grad():
                before, after = trainer.render(view)[0].cpu(), nxt.render(view)[0].cpu()
            diff = (before - after).abs()
            assert float(diff.max()) < gpu_plan.HANDOVER_MAX and float(diff.mean()) < gpu_plan.HANDOVER_MEAN, (
                device, step, float(diff.max()), float(diff.mean()))
        trainer = nxt
        gpu_plan.train_watched(trainer, gpu_plan.Watch(), until=until)
    straight = gpu_plan.make_trainer(sfm, tmp_path / "straight", "cpu", strategy=strategy)
    gpu_plan.train_watched(straight, gpu_plan.Watch())
    assert trainer is not None and trainer.device == "cpu"
    crossed, reference = trainer.evaluate()[0], straight.evaluate()[0]
    assert abs(crossed - reference) <= gpu_plan.RESUME_PSNR_DB, (crossed, reference)
    count, ref_count = len(trainer.params["means"]), len(straight.params["means"])
    assert abs(count - ref_count) <= gpu_plan.RESUME_GAUSSIANS * ref_count

"""The GPU tests' plan, checked on the CPU: their schedule refines inside gsplat's window and reaches the
cap (the same trainer on the CPU does it), checkpoints are device-neutral, LPIPS failures are legible."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from spaceport.api import TrainOptions
from spaceport.stages.train import checkpoint
from spaceport.stages.train.loop import refine_steps
from spaceport.stages.train.metrics import lpips_scorer
from spaceport.storage import LocalStore
from tests.train import gpu_plan


@pytest.fixture(scope="module")
def sfm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gpu_plan.write_scene(tmp_path_factory.mktemp("sfm"))


def test_the_schedule_refines_inside_gsplats_window() -> None:
    assert refine_steps(TrainOptions.model_validate(gpu_plan.SCHEDULE)) == gpu_plan.REFINE_STEPS
    # the schedule the GPU tests had: from 100 every 50 until 150 (half of 300) never refines
    old = TrainOptions.model_validate({"iterations": 300, "densifyFrom": 100, "densifyEvery": 50})
    assert old.densify_schedule() == (100, 150, 50) and refine_steps(old) == []
    # the defaults: 7000 steps from 500 every 100 until 3500
    assert refine_steps(TrainOptions()) == list(range(600, 3500, 100))


@pytest.mark.parametrize("strategy", ["default", "mcmc"])
def test_on_cpu_the_schedule_densifies_to_the_cap(sfm: Path, tmp_path: Path, strategy: str) -> None:
    """The GPU test's trainer, on the CPU: every refine step of the plan is a pass of gsplat's strategy,
    growth and pruning (or relocation and addition) happen, and the count reaches the cap, never beyond."""
    trainer = gpu_plan.make_trainer(sfm, tmp_path, "cpu", strategy=strategy)
    assert len(trainer.params["means"]) == 900
    initial = trainer.evaluate()[0]
    seen = gpu_plan.watch(trainer)
    gpu_plan.train_watched(trainer, seen)
    assert trainer.evaluate()[0] > initial + 3  # as test_gpu.py asks of CUDA
    assert seen.passes == gpu_plan.REFINE_STEPS
    assert max(seen.counts) == 1000 and all(c <= 1000 for c in seen.counts)
    if strategy == "mcmc":
        assert seen.added == 100 and seen.counts[-1] == 1000  # 900 -> 945 -> 1000, then held at the cap
        assert seen.relocated > 0
    else:
        assert seen.duplicated > 0 and seen.split > 0 and seen.pruned > 0


def test_checkpoints_hold_only_cpu_tensors_and_resume_bit_for_bit_on_cpu(sfm: Path, tmp_path: Path) -> None:
    """The format a CUDA run writes too (every tensor moved to the CPU), through the store's two slots."""
    first = gpu_plan.make_trainer(sfm, tmp_path / "a", "cpu", strategy="mcmc", iterations=120)
    gpu_plan.train_watched(first, gpu_plan.Watch(), until=110)
    state = first.state_dict()
    assert {"step", "params", "optimizers", "strategy", "torch_rng", "cuda_rng", "floaters_removed"} <= set(state)
    assert all(t.device.type == "cpu" for t in gpu_plan.tensors(state))
    assert state["cuda_rng"].numel() == 0  # written on CPU: a CUDA resume keeps its own generator
    store = LocalStore(tmp_path / "out")
    checkpoint.save(store, state, first.step, "fp")
    gpu_plan.train_watched(first, gpu_plan.Watch())  # on to 120, before another trainer reseeds torch
    loaded, step = checkpoint.load_latest(store, "fp")
    assert step == 110
    second = gpu_plan.make_trainer(sfm, tmp_path / "b", "cpu", strategy="mcmc", iterations=120)
    second.load_state_dict(loaded)
    gpu_plan.train_watched(second, gpu_plan.Watch())
    for name in first.params:
        assert torch.equal(first.params[name], second.params[name]), name


def test_a_cuda_run_without_an_lpips_score_fails_legibly() -> None:
    metrics = {"psnr": 30.0}
    message = gpu_plan.lpips_failure(metrics, ["no LPIPS: LPIPS weights could not be loaded (URLError: ...)"])
    assert message is not None and "weights could not be loaded" in message and "TORCH_HOME" in message
    assert gpu_plan.lpips_failure({"lpips": 0.1}, []) is None


def test_lpips_installed_without_weights_gives_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """lpips imports, but building its AlexNet needs torchvision's weights, downloaded on first use."""

    class NoWeights:
        def __init__(self, **_: object) -> None:
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=NoWeights))
    score, why = lpips_scorer("cuda")
    assert score is None and why.startswith("LPIPS weights could not be loaded (OSError")

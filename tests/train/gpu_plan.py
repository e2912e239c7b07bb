"""What the GPU tests (test_gpu.py) run, shared with their CPU counterparts (test_gpu_plan.py): a schedule
that refines inside gsplat's window and reaches the Gaussian cap, a trainer watched pass by pass, and
the tolerances a resumed run is held to per device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spaceport.api import TrainOptions
from spaceport.stages.train.data import load_dataset
from spaceport.stages.train.loop import Trainer
from spaceport.stages.train.rasterize import scene_extent
from spaceport.storage import LocalStore
from tests.train.fixtures import write_sfm_output

SCHEDULE: dict[str, Any] = {
    "iterations": 400, "densifyFrom": 50, "densifyEvery": 50, "densifyUntil": 351, "holdoutEvery": 4,
    "shDegreeInterval": 100,
    # 300 SfM points + 600 random seeds start 10% under the cap: MCMC reaches it in two passes (5% each)
    # and DefaultStrategy in one (a low threshold makes most visible Gaussians grow)
    "initRandomPoints": 600, "maxGaussians": 1000, "densifyGradThreshold": 2e-5,
    # an opacity reset at step 200, inside the window: the passes after it prune what stayed faint, and
    # DefaultStrategy prunes Gaussians too large for the scene only after a reset step
    "opacityResetEvery": 200,
}
REFINE_STEPS = [100, 150, 200, 250, 300, 350]
"""gsplat refines where ``densifyFrom < step < densifyUntil`` and ``step % densifyEvery == 0``."""

RESUME_PSNR_DB = 1.0
"""A resumed CUDA run (or one resumed across devices) ends within this much held-out PSNR of a straight
run, and within RESUME_GAUSSIANS of its Gaussian count (CUDA sums gradients with atomics: not bitwise).
It starts from the very same state and drifts apart only through rounding, so it stays nearer than two
seeds do: on CPU, seeds 0 and 1 of this schedule ended 1.5 dB apart (DefaultStrategy, 25.5 and 27.0 dB on
the three held-out views) and both at the 1,000 cap."""
RESUME_GAUSSIANS = 0.1
CROSS_DEVICE_PIXEL = 2e-3
"""Largest per-pixel difference of one view of 300 random Gaussians rendered by gsplat on CUDA and by our
CPU rasterizer (float32 both; gsplat builds with fast math)."""
HANDOVER_MAX, HANDOVER_MEAN = 1e-2, 1e-4
"""The same for a trained scene (~1,000 overlapping Gaussians) handed from one device to the other: a
pixel where the two differ on which Gaussian ends the compositing (transmittance under 1e-4) may differ
by more than the random scene's bound, the image as a whole must not."""


def write_scene(root: Path) -> Path:
    write_sfm_output(root, n_points=300)
    return root


@dataclass
class Watch:
    """What a strategy did, pass by pass (counted by wrapping its own methods)."""

    passes: list[int] = field(default_factory=list)
    duplicated: int = 0
    split: int = 0
    pruned: int = 0
    relocated: int = 0
    added: int = 0
    counts: list[int] = field(default_factory=list)


def make_trainer(sfm: Path, scratch: Path, device: str, **overrides: Any) -> Trainer:
    options = TrainOptions.model_validate({**SCHEDULE, **overrides, "device": device})
    data = load_dataset(LocalStore(sfm), scratch, holdout_every=options.holdout_every, downscale=1.0)
    return Trainer(data, options, device, scene_extent(np.stack([v.camera.centre for v in data.views])))


def watch(trainer: Trainer) -> Watch:
    """Count every refinement the trainer's strategy makes from now on."""
    seen = Watch()
    s = trainer.strategy

    def wrap(name: str, record: Any) -> None:
        original = getattr(s, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            record(out)
            return out

        setattr(s, name, wrapper)

    def grow(out: tuple[int, int]) -> None:
        seen.passes.append(trainer.step)
        seen.duplicated += out[0]
        seen.split += out[1]

    def relocate(n: int) -> None:
        seen.passes.append(trainer.step)
        seen.relocated += n

    if trainer.mcmc:
        wrap("_relocate_gs", relocate)
        wrap("_add_new_gs", lambda n: setattr(seen, "added", seen.added + n))
    else:
        wrap("_grow_gs", grow)
        wrap("_prune_gs", lambda n: setattr(seen, "pruned", seen.pruned + n))
    return seen


def train_watched(trainer: Trainer, seen: Watch, until: int | None = None) -> None:
    while trainer.step < (until or trainer.options.iterations):
        trainer.train_step()
        seen.counts.append(len(trainer.params["means"]))


def tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a nested state dict."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in tensors(v)]
    return []


def lpips_failure(metrics: dict[str, Any], warnings: list[str]) -> str | None:
    """Why a CUDA run with the lpips package installed has no LPIPS score, as a test failure message; None
    when it has one. (Not a KeyError on ``metrics["lpips"]``: the stage's warning says what was missing.)"""
    if "lpips" in metrics:
        return None
    why = [w for w in warnings if "LPIPS" in w] or ["the stage gave no reason"]
    return ("lpips is installed but the run has no LPIPS score: " + "; ".join(why) + ". Its AlexNet weights "
            "(torchvision's alexnet-owt-7be5be79.pth) must be in $TORCH_HOME/hub/checkpoints: the stage image "
            "fetches them at build time; offline, copy them there or uninstall lpips")

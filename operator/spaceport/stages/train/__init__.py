"""Training stage: 3D Gaussian Splatting from the SfM output (gsplat on CUDA, compiled kernels on CPU).

Modules: ``stage`` (run_train: the stage contract), ``loop`` (the trainer), ``rasterize`` (one interface,
two back ends), ``project_cpu``, ``tile_binning``, ``rasterizer_cpu`` and ``fast_exp`` (numba kernels:
projection + SH, binning, compositing), ``ssim_cpu`` (compiled SSIM), ``stereo_init`` (plane-sweep seeds),
``reference`` (pure-torch compositor for tests and benchmarks), ``render`` (Camera, cameras.json, render),
``data``, ``checkpoint``, ``metrics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spaceport.contract import StageContext, StageOutput


def run_train(ctx: StageContext) -> StageOutput:
    # imported here so that `spaceport` commands that never train do not pay for importing torch
    from spaceport.stages.train.stage import run_train as run

    return run(ctx)

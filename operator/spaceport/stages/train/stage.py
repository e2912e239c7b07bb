"""``run_train``: the training stage under the stage contract (inputs, checkpoints, signals, outputs)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch

from spaceport.api import TRAIN, TrainOptions
from spaceport.contract import BadInputError, RetryableError, StageContext, StageOutput
from spaceport.splats import ply_bytes
from spaceport.stages.cpus import usable_cpus
from spaceport.stages.heap import keep_freed_memory
from spaceport.stages.train import checkpoint
from spaceport.stages.train.blocks import block_training, merge_blocks
from spaceport.stages.train.cuda_env import cuda_problem, driver_version
from spaceport.stages.train.data import Dataset, load_dataset, png_bytes
from spaceport.stages.train.loop import Trainer, TrainingDiverged
from spaceport.stages.train.metrics import LpipsScore, lpips_scorer
from spaceport.stages.train.precompile import Precompile
from spaceport.stages.train.rasterize import scene_extent
from spaceport.stages.train.render import CAMERAS_FILE, HOLDOUT_DIR, cameras_json, holdout_key

LOAD_SHARE, TRAIN_SHARE = 0.05, 0.9
"""Fractions of the stage's progress bar for loading and for the optimisation steps."""


def pick_device(requested: str, warn: Callable[[str], None] = lambda _: None) -> str:
    """``cuda`` or ``cpu`` for ``train.device``. ``cuda`` where the GPU cannot be used is a clear error
    naming the cause (no GPU in the Pod, a driver too old for torch's CUDA, a CPU-only torch); ``auto``
    falls back to the CPU, with a warning where a driver is there but unusable."""
    if requested == "cpu":
        return "cpu"
    problem = cuda_problem()
    if problem is None:
        return "cuda"
    if requested == "cuda":
        raise BadInputError(f"train.device: 'cuda' requested but no usable GPU: {problem}. Fix the node or the "
                            "Pod's GPU request, or set train.device to 'auto' or 'cpu' to train on the CPU")
    if torch.version.cuda is not None and driver_version() is not None:
        warn(f"train.device auto: training on the CPU, the GPU is unusable: {problem}")
    return "cpu"


def fingerprint(options: TrainOptions, data: Dataset) -> str:
    """Identifies a training setup: a checkpoint from another one must not be resumed."""
    ident = {"options": options.model_dump(mode="json", exclude={"device"}),
             "views": [(v.camera.name, v.camera.width, v.camera.height, v.camera.held_out) for v in data.views],
             "points": len(data.points)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class StopRequest:
    """Set by SIGTERM; the loop checkpoints at the next step boundary and exits (the pod's grace period)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *_: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def run_train(ctx: StageContext) -> StageOutput:
    device = pick_device(ctx.options.device, ctx.warn)
    if device != "cpu":
        return _dispatch(ctx, device)
    # On CPU the compiled kernels own the cores. torch's own thread pool, spinning between its many small
    # ops, fights them for the same cores (measured: SSIM 40x slower with two torch threads beside numba).
    # The kernels' thread pool fits the CPUs this container may use (its cgroup limit), not the node's cores:
    # threads the kernel throttles stall every parallel region (see spaceport.stages.cpus).
    threads, kernel_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    if "NUMBA_NUM_THREADS" not in os.environ:
        numba.set_num_threads(min(usable_cpus(), numba.config.NUMBA_NUM_THREADS))
    ctx.log.info("training on %d CPU threads", numba.get_num_threads())
    try:
        # each step frees and allocates the same large buffers: fresh pages from the kernel would cost
        # a quarter of a step (spaceport.stages.heap)
        with keep_freed_memory():
            return _dispatch(ctx, device)
    finally:
        torch.set_num_threads(threads)
        numba.set_num_threads(kernel_threads)


def _dispatch(ctx: StageContext, device: str) -> StageOutput:
    """The whole scene, one block of it, or the merge of the blocks (``ctx.part``)."""
    options: TrainOptions = ctx.options
    part = ctx.part
    if part is None:
        return _run(ctx, device, options, lambda: load_dataset(
            ctx.input, ctx.scratch, holdout_every=options.holdout_every, downscale=options.downscale,
            max_image_size=options.max_image_size))
    if part.block is None:
        return merge_blocks(ctx, device)
    block_options, load = block_training(ctx, part.blocks, part.block)
    return _run(ctx, device, block_options, load, {"block": part.block})


def _prepare(ctx: StageContext, options: TrainOptions, device: str,
             load: Callable[[], Dataset]) -> tuple[Trainer, Dataset]:
    """The dataset and the initial model (no compiled kernel runs here: see Precompile)."""
    data = load()
    centres = np.stack([v.camera.centre for v in data.views])
    if options.init_stereo_points:
        ctx.progress.update(LOAD_SHARE / 2, f"train: stereo seeds from {len(data.train or data.views)} views",
                            force=True)
    return Trainer(data, options, device, scene_extent(centres)), data


def _run(ctx: StageContext, device: str, options: TrainOptions, load: Callable[[], Dataset],
         extra: dict[str, Any] | None = None) -> StageOutput:
    # gsplat JIT-builds its CUDA extension on first use; never into the (read-only) image filesystem
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ctx.scratch / "torch_extensions"))
    ctx.progress.update(0.0, "train: loading the SfM model and images", force=True)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()  # peakMemoryBytes is this stage's, not the process's so far
    precompile = Precompile() if device == "cpu" else None
    try:
        trainer, data = _prepare(ctx, options, device, load)
    except BaseException:
        if precompile is not None:
            precompile.cancel()
        raise
    if precompile is not None:
        ctx.progress.update(LOAD_SHARE * 0.75, "train: loading the CPU kernels (the first run compiles them, "
                                               "about a minute)", force=True)
        precompile.wait()
    fp = fingerprint(options, data)
    meta: dict[str, Any] = {"initial_psnr": None, "seconds": 0.0}
    resumed = checkpoint.load_latest(ctx.output, fp)
    if resumed is not None:
        state, step = resumed
        trainer.load_state_dict(state)
        meta = dict(state.get("meta", meta))
        ctx.log.info("resuming from the checkpoint at step %d", step)
    else:
        meta["initial_psnr"] = trainer.evaluate()[0]
    resumed_from = trainer.step if resumed else None
    ctx.progress.update(LOAD_SHARE, f"train: {len(data.train)} views, {len(data.held_out)} held out, "
                                    f"{len(trainer.params['means'])} Gaussians on {device}", force=True)

    def save() -> None:
        state = trainer.state_dict()
        state["meta"] = {**meta, "seconds": meta["seconds"] + (time.monotonic() - t0)}
        checkpoint.save(ctx.output, state, trainer.step, fp)

    t0 = time.monotonic()
    start_step = trainer.step
    span = ctx.progress.span(LOAD_SHARE, LOAD_SHARE + TRAIN_SHARE)
    try:
        with StopRequest() as stop:
            while trainer.step < options.iterations:
                trainer.train_step()
                s = trainer.step
                message = f"step {s}/{options.iterations} loss {trainer.loss:.4f} psnr {trainer.last_psnr:.2f}"
                if options.eval_every and s % options.eval_every == 0:
                    message += f" held-out psnr {trainer.evaluate()[0]:.2f}"
                span.update(s / options.iterations, message)
                if stop.signal is not None:
                    save()
                    raise RetryableError(f"stopped by signal {stop.signal} at step {s}; checkpoint saved, "
                                         "a re-run resumes from it")
                if s % options.checkpoint_every == 0 and s < options.iterations:
                    save()
    except TrainingDiverged as e:
        raise BadInputError(f"training diverged ({e}); the last good checkpoint is kept; lower train.positionLr "
                            "or check the SfM model's scale") from e
    except torch.OutOfMemoryError as e:
        raise BadInputError(f"out of GPU memory with {len(trainer.params['means'])} Gaussians; lower "
                            "train.maxGaussians or raise train.downscale") from e
    seconds = meta["seconds"] + (time.monotonic() - t0)
    steps_run = trainer.step - start_step
    steps_per_second = steps_run / max(1e-9, time.monotonic() - t0)
    ctx.progress.update(LOAD_SHARE + TRAIN_SHARE, "train: evaluating held-out views", force=True)
    psnr_value, ssim_value, lpips_value = trainer.evaluate(lpips=lpips_for(ctx, device))
    outputs = write_outputs(ctx, trainer, data)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else rss
    metrics = {
        "gaussians": len(trainer.params["means"]),
        "psnr": round(psnr_value, 3),
        "ssim": round(ssim_value, 4),
        "lpips": None if lpips_value is None else round(lpips_value, 4),
        "initialPsnr": None if meta["initial_psnr"] is None else round(meta["initial_psnr"], 3),
        "evalViews": "heldOut" if data.held_out else "train",
        "steps": trainer.step,
        "durations": {"training": round(seconds, 2)},  # the optimisation's seconds, earlier attempts' included
        "stepsPerSecond": round(steps_per_second, 2),
        "peakMemoryBytes": int(peak),
        "peakRssBytes": int(rss),
        "imageWidth": max(v.camera.width for v in data.views),  # the largest trained at
        "imageHeight": max(v.camera.height for v in data.views),
        "device": device,
        **(extra or {}),
    }
    if trainer.free_space is not None:
        metrics["floatersRemoved"] = trainer.floaters_removed
    if trainer.colour is not None:
        metrics["psnrNeighbourColour"] = round(trainer.evaluate(colour="neighbours")[0], 3)
        metrics.update(trainer.colour.summary())
    if trainer.vignetting is not None or trainer.light is not None:
        metrics["psnrPhotographed"] = round(trainer.evaluate(colour="photographed")[0], 3)
    if trainer.vignetting is not None:
        metrics["psnrVignetted"] = (metrics["psnrPhotographed"] if trainer.light is None
                                    else round(trainer.evaluate(colour="vignetted")[0], 3))
        metrics["vignettingCornerGain"] = trainer.vignetting.corner_gains()
    if trainer.light is not None:
        metrics["lightGainRange"] = trainer.light.range()
    if resumed_from is not None:
        metrics["resumedFromStep"] = resumed_from
    return StageOutput(metrics=TRAIN.metrics.model_validate({k: v for k, v in metrics.items() if v is not None}),
                       outputs=outputs)


def lpips_for(ctx: StageContext, device: str) -> LpipsScore | None:
    """The LPIPS scorer where it can run; on a GPU without it, the stage's warnings say why."""
    score, why = lpips_scorer(device)
    if score is None and device.startswith("cuda"):
        ctx.warn(f"no LPIPS: {why}")
    return score


def write_outputs(ctx: StageContext, trainer: Trainer, data: Dataset) -> dict[str, str]:
    scene = trainer.scene()
    keep = scene.finite_mask()
    if not keep.all():
        ctx.warn(f"dropped {int((~keep).sum())} Gaussians with non-finite values from splats.ply")
        scene = scene.subset(keep)
    files = TRAIN.files
    ctx.output.write_bytes(files.ply, ply_bytes(scene))
    for view in data.held_out:
        ctx.output.write_bytes(holdout_key(view.camera.name), png_bytes(view.image.numpy()))
    ctx.output.write_text(CAMERAS_FILE, cameras_json([v.camera for v in data.views]))
    outputs = {"ply": ctx.output.uri_of(files.ply), "cameras": ctx.output.uri_of(CAMERAS_FILE)}
    if data.held_out:
        outputs["holdout"] = ctx.output.uri_of(HOLDOUT_DIR)
    if data.georef is not None:
        ctx.output.write_bytes(files.georef, data.georef)
        outputs["georef"] = ctx.output.uri_of(files.georef)
    return outputs

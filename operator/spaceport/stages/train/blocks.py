"""Partitioned training: one block's share of the model, and the merge of the trained blocks.

A block (``spaceport stage train --blocks K --block I``, one index of an Indexed Job) trains like a whole scene,
on the SfM points of its region and the photos that see it (``partition.py``), with its share of the Gaussian
budget, into ``blocks/<I>/``. The merge (``--merge``) keeps from each block the Gaussians inside its core, joins
them, and writes into the training folder what a single training writes: ``splats.ply``, ``cameras.json`` (every
camera), ``holdout/`` and ``georef.json``, with the held-out photos measured on the merged scene. Held-out photos
are chosen over the whole model before it is split, so no block trains on a photo the merge measures with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spaceport.api import TRAIN, TrainOptions
from spaceport.contract import RESULT_FILE, BadInputError, StageContext, StageOutput, StageResult
from spaceport.splats import GaussianScene, concat, ply_bytes, read_ply
from spaceport.stages.train.data import Dataset, Model, dataset_of, load_model, load_views, png_bytes
from spaceport.stages.train.metrics import psnr, ssim
from spaceport.stages.train.partition import Partition, plan
from spaceport.stages.train.render import CAMERAS_FILE, HOLDOUT_DIR, cameras_json, holdout_key, render
from spaceport.storage import Store

MERGE_LOAD_SHARE = 0.3
"""Of the merge's progress: reading and cutting the blocks; the rest measures the held-out photos."""


def model_of(store: Store, scratch: Path, options: TrainOptions) -> Model:
    """The SfM model with cameras at the training size and held-out ones marked, as every block and the merge see it."""
    return load_model(store, scratch, holdout_every=options.holdout_every, downscale=options.downscale,
                      max_image_size=options.max_image_size)


def partition_of(model: Model, blocks: int, overlap: float) -> Partition:
    return plan(np.stack([c.centre for c in model.cameras]), blocks, overlap)


def block_options(options: TrainOptions, share: float) -> TrainOptions:
    """A block's options: its share of the Gaussian cap and of the extra seeds (``share``: of the model's SfM points,
    those its training photos saw); everything else as the whole scene's.

    Gaussians grow wherever the block's photos see, and the merge keeps those in the block's core: a cap in
    proportion to the whole area its photos see, not to its core, leaves the merged scene about the whole cap."""
    return options.model_copy(update={
        "max_gaussians": max(1000, math.ceil(options.max_gaussians * share)),
        "init_random_points": round(options.init_random_points * share),
        "init_stereo_points": round(options.init_stereo_points * share),
    })


def block_training(ctx: StageContext, blocks: int, index: int) -> tuple[TrainOptions, Callable[[], Dataset]]:
    """Block ``index``'s options and a loader of its dataset (its photos are read only when it is called)."""
    model = model_of(ctx.input, ctx.scratch, ctx.options)
    partition = partition_of(model, blocks, ctx.options.block_overlap)
    centres = np.stack([c.centre for c in model.cameras])
    views = partition.views_of(index, centres, [model.observed[c.name] for c in model.cameras], model.points)
    points = partition.in_region(index, model.points)
    block = model.select(views, points)
    trained = [c for c in block.cameras if not c.held_out]
    if not trained or not len(block.points):
        raise BadInputError(f"train.blocks: block {index} of {blocks} holds {len(trained)} training photos and "
                            f"{len(block.points)} SfM points; use fewer blocks")
    seen = np.unique(np.concatenate([model.observed[c.name] for c in trained]))
    share = len(seen) / len(model.points)
    ctx.log.info("block %d of %d: %d photos (%d held out), %d of %d SfM points", index, blocks, len(block.cameras),
                 len(block.cameras) - len(trained), len(block.points), len(model.points))
    return block_options(ctx.options, share), lambda: dataset_of(block)


def merged_scene(ctx: StageContext, partition: Partition) -> tuple[GaussianScene, list[dict[str, Any]]]:
    """Each block's Gaussians inside its core, joined; and the blocks' own metrics."""
    pieces, metrics = [], []
    count = len(partition.blocks)
    for i in range(count):
        folder = ctx.output.child(TRAIN.files.block(i))
        scene = read_ply(folder.read_bytes(TRAIN.files.ply), name=folder.uri_of(TRAIN.files.ply))
        pieces.append(scene.subset(partition.in_core(i, scene.means)))
        metrics.append(StageResult.model_validate_json(folder.read_bytes(RESULT_FILE)).metrics)
        ctx.progress.update(MERGE_LOAD_SHARE * (i + 1) / count, f"train: merged block {i + 1} of {count}")
    return concat(*pieces), metrics


def within_cap(scene: GaussianScene, cap: int) -> GaussianScene:
    """The scene with at most ``cap`` Gaussians: the most opaque ones, as densification prunes the least. (Each
    block's cap follows what its photos see, so the cores together may hold a little more than the whole cap.)"""
    if scene.count <= cap:
        return scene
    return scene.subset(np.sort(np.argsort(-scene.opacities, kind="stable")[:cap]))


def merge_blocks(ctx: StageContext, device: str) -> StageOutput:
    """The trained blocks (``blocks/<i>/``, checked by the runner to be this model's and these options') as one
    scene in the training folder."""
    assert ctx.part is not None
    t0 = time.monotonic()
    options: TrainOptions = ctx.options
    model = model_of(ctx.input, ctx.scratch, ctx.options)
    partition = partition_of(model, ctx.part.blocks, options.block_overlap)
    scene, per_block = merged_scene(ctx, partition)
    keep = scene.finite_mask()
    if not keep.all():
        ctx.warn(f"dropped {int((~keep).sum())} Gaussians with non-finite values from splats.ply")
        scene = scene.subset(keep)
    scene = within_cap(scene, options.max_gaussians)
    files = TRAIN.files
    ctx.output.write_bytes(files.ply, ply_bytes(scene))
    held = [c for c in model.cameras if c.held_out]
    eval_cameras = held or [c for c in model.cameras if not c.held_out]
    scores = []
    for n, view in enumerate(load_views(model, eval_cameras)):
        if view.camera.held_out:
            ctx.output.write_bytes(holdout_key(view.camera.name), png_bytes(view.image.numpy()))
        image = torch.from_numpy(render(scene, view.camera, device))
        target = view.image.float() / 255.0
        scores.append((psnr(image, target), float(ssim(image, target))))
        ctx.progress.update(MERGE_LOAD_SHARE + (1 - MERGE_LOAD_SHARE) * (n + 1) / len(eval_cameras),
                            f"train: measured {n + 1} of {len(eval_cameras)} views of the merged scene")
    ctx.output.write_text(CAMERAS_FILE, cameras_json(model.cameras))
    outputs = {"ply": ctx.output.uri_of(files.ply), "cameras": ctx.output.uri_of(CAMERAS_FILE)}
    if held:
        outputs["holdout"] = ctx.output.uri_of(HOLDOUT_DIR)
    if model.georef is not None:
        ctx.output.write_bytes(files.georef, model.georef)
        outputs["georef"] = ctx.output.uri_of(files.georef)
    mean = np.mean(np.array(scores), axis=0)
    seconds = sum(float((m.get("durations") or {}).get("training", 0.0)) for m in per_block)
    metrics = {
        "gaussians": scene.count,
        "psnr": round(float(mean[0]), 3),
        "ssim": round(float(mean[1]), 4),
        "evalViews": "heldOut" if held else "train",
        "steps": sum(int(m.get("steps") or 0) for m in per_block),
        "durations": {"training": round(seconds, 2), "merge": round(time.monotonic() - t0, 2)},
        "peakMemoryBytes": max(int(m.get("peakMemoryBytes") or 0) for m in per_block),
        "imageWidth": max(c.width for c in model.cameras),
        "imageHeight": max(c.height for c in model.cameras),
        "device": device,
        "blocks": ctx.part.blocks,
    }
    return StageOutput(metrics=TRAIN.metrics.model_validate(metrics), outputs=outputs)

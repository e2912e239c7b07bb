"""Partitioned training benchmark: one generated flight trained whole and in blocks, same SfM model, same run.

    .venv/bin/python bench/blocks.py [--blocks 4] [--steps 2000] [--photos 256] [--out bench-blocks]
    .venv/bin/python bench/blocks.py --smoke     # the tests' 16-view scene (no SfM), 2 blocks, a few steps

1. A generated drone flight (lawnmower, GPS tags; 256 photos at 480x360, or ``--photos``: the surveyed area
   grows with them at the same photo overlap) and its SfM model, made once. 256 photos give each of 4 blocks
   64 camera positions of its own; in a flight of 64 a block's border band is a large part of the block.
2. The reference: one training of the whole scene with the demo's settings, ``blocks x steps`` steps and the
   demo's Gaussian cap scaled by the area (100k per 64 photos).
3. Ours: the same settings in ``blocks`` blocks of ``steps`` steps each (the same total steps; the cap split by
   each block's share of the SfM points), trained one after another and merged (``spaceport run``'s path).
4. Held-out PSNR/SSIM of both on the same held-out photos (chosen over the whole model before it is split), the
   difference, seconds of both and their ratio, and PNGs of the held-out photos nearest the block borders:
   photo | whole | merged, with the borders' places in the file name (``--out``).

The last line printed is a JSON record (bench/record.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import add_smoke_flag, emit  # noqa: E402

FLIGHT = {"n_images": 256, "width": 480, "height": 360, "seed": 5, "path": "lawnmower"}


PHOTOS_PER_CAP = 64
"""The demo's Gaussian cap covers the area of this many photos of the flight."""


def train_options(steps: int, smoke: bool, photos: int = FLIGHT["n_images"]) -> dict[str, Any]:
    from spaceport.demo import DEMO_CONFIG

    options = {**DEMO_CONFIG["train"], "iterations": steps, "halfResolutionSteps": steps // 2}
    options["maxGaussians"] = options["maxGaussians"] * photos // PHOTOS_PER_CAP
    if smoke:
        options.update(initStereoPoints=0, initRandomPoints=1000, maxGaussians=5000, downscale=1.0)
    return options


def sfm_model(work: Path, smoke: bool, photos: int) -> Path:
    from spaceport.stages.runner import run_stage
    from spaceport.synthetic import generate_flight

    if smoke:  # the tests' small scene and its exact model, no SfM: seconds
        from tests.train.fixtures import write_sfm_output

        if not (work / "sfm" / "sparse").exists():
            write_sfm_output(work / "sfm", n_views=16, ground=True)
        return work / "sfm"
    count, photos = photos, work / "photos"
    if not photos.exists():
        generate_flight(photos, **{**FLIGHT, "n_images": count})
    run_stage("sfm", str(photos), str(work / "sfm"), {"maxImageSize": FLIGHT["width"]})
    return work / "sfm"


def train_both(sfm: Path, work: Path, blocks: int, steps: int, smoke: bool, photos: int) -> dict[str, Any]:
    from spaceport.contract import StageResult
    from spaceport.local import run_blocks
    from spaceport.stages.runner import run_stage
    from spaceport.storage import open_store

    whole_options = {**train_options(blocks * steps, smoke, photos), "blocks": 1}
    whole = run_stage("train", str(sfm), str(work / "whole"), whole_options)
    merged = run_blocks(open_store(sfm), open_store(work / "merged"), {**train_options(steps, smoke, photos),
                                                                      "blocks": blocks}, blocks, None)
    # the stages' own seconds (also right for a training an earlier run with --work finished)
    whole_seconds = whole.duration_seconds
    merged_seconds = merged.duration_seconds + sum(
        StageResult.model_validate_json((work / "merged" / "blocks" / str(i) / "result.json").read_text())
        .duration_seconds for i in range(blocks))
    w, m = whole.metrics, merged.metrics
    return {
        "reference": "one training of the whole scene, the same total steps and Gaussian cap",
        "blocks": blocks, "stepsPerBlock": steps,
        "whole": {"psnr": w["psnr"], "ssim": w["ssim"], "gaussians": w["gaussians"],
                  "seconds": round(whole_seconds, 1)},
        "merged": {"psnr": m["psnr"], "ssim": m["ssim"], "gaussians": m["gaussians"],
                   "seconds": round(merged_seconds, 1)},
        "psnrDifferenceDb": round(m["psnr"] - w["psnr"], 3),
        "secondsRatio": round(merged_seconds / whole_seconds, 3),
    }


def border_views(sfm: Path, work: Path, out: Path, options: dict[str, Any], count: int) -> list[str]:
    """PNGs of the held-out photos whose centre lies nearest a border between blocks: photo | whole | merged."""
    from PIL import Image

    from spaceport.api import TrainOptions
    from spaceport.splats import read_ply
    from spaceport.stages.train.blocks import model_of, partition_of
    from spaceport.stages.train.data import load_views
    from spaceport.stages.train.render import render
    from spaceport.storage import open_store

    with tempfile.TemporaryDirectory() as tmp:
        train = TrainOptions.model_validate(options)
        model = model_of(open_store(sfm), Path(tmp), train)
    partition = partition_of(model, train.blocks, train.block_overlap)
    held = [c for c in model.cameras if c.held_out]
    uv = partition.plane(np.stack([c.centre for c in held]))
    cuts = [edge for b in partition.blocks for edge in b.core.flatten() if np.isfinite(edge)]

    def distance(i: int) -> float:
        return min(min(abs(uv[i, 0] - c), abs(uv[i, 1] - c)) for c in cuts)

    scenes = {name: read_ply(work / name / "splats.ply") for name in ("whole", "merged")}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in sorted(range(len(held)), key=distance)[:count]:
        view = load_views(model, [held[i]])[0]
        renders = [(render(scenes[name], view.camera) * 255 + 0.5).astype(np.uint8) for name in ("whole", "merged")]
        path = out / f"border-{held[i].name.rsplit('.', 1)[0]}-{distance(i):.1f}.png"  # model units from the border
        Image.fromarray(np.concatenate([view.image.numpy(), *renders], axis=1)).save(path)
        written.append(str(path))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2000, help="steps per block (the whole scene: blocks x steps)")
    parser.add_argument("--photos", type=int, default=FLIGHT["n_images"], help="photos in the generated flight")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "blocks"),
                        help="folder for the border PNGs (default: bench/results/blocks; --smoke: a temporary one)")
    parser.add_argument("--work", help="keep the flight, SfM model and trainings here (default: a temporary folder)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    blocks, steps = (2, 60) if args.smoke else (args.blocks, args.steps)
    with tempfile.TemporaryDirectory(prefix="spaceport-bench-blocks-") as tmp:
        work = Path(args.work or tmp)
        sfm = sfm_model(work, args.smoke, args.photos)
        record = train_both(sfm, work, blocks, steps, args.smoke, args.photos)
        out = work / "pngs" if args.smoke else Path(args.out)
        options = {**train_options(steps, args.smoke, args.photos), "blocks": blocks}
        record["pngs"] = border_views(sfm, work, out, options, 2 if args.smoke else 4)
        assert all(Path(png).stat().st_size > 0 for png in record["pngs"])
    w, m = record["whole"], record["merged"]
    print(f"whole ({blocks * steps} steps): {w['psnr']:.2f} dB, {w['gaussians']} Gaussians, {w['seconds']:.0f} s")
    print(f"{blocks} blocks x {steps} steps, merged: {m['psnr']:.2f} dB, {m['gaussians']} Gaussians, "
          f"{m['seconds']:.0f} s")
    print(f"merged - whole: {record['psnrDifferenceDb']:+.2f} dB; time merged / whole: {record['secondsRatio']:.2f}")
    flight = None if args.smoke else {**FLIGHT, "n_images": args.photos}
    emit("blocks", smoke=args.smoke, settings={"flight": flight, "blocks": blocks, "stepsPerBlock": steps},
         results=record)


if __name__ == "__main__":
    main()

"""Training on a GPU: our trainer's defaults vs gsplat's simple_trainer, on the same SfM model and images.

    python bench/train_gpu.py [--sfm DIR] [--steps N] [--device cuda|cpu] [--demo] [--smoke]

Rows, each one run of the train stage for the same ``--steps`` (default 7,000, TrainOptions' default) at the
demo's resolution:

1. ``ours (defaults)``: TrainOptions' defaults (3DGS's learning rates, densification from min(500, steps/10)
   every min(100, steps/50) until half the steps, opacity reset every 3,000, 1,000,000 cap, SfM points only).
2. ``gsplat simple_trainer``: gsplat's examples/simple_trainer.py defaults reproduced with our options, its
   schedule scaled to ``--steps`` as its own ``--steps_scaler`` does (``S = steps / 30,000``; refine from
   ``500 S`` every ``100 S`` until ``15,000 S``, opacity reset every ``3,000 S``, a new SH degree every
   ``1,000 S``), DefaultStrategy's thresholds, its learning rates (means 1.6e-4 x scene scale decaying 100x,
   scales 5e-3, opacities 5e-2, quats 1e-3, sh0 2.5e-3, shN 2.5e-3/20), L1 + 0.2 SSIM, and its
   initialisation: the SfM points alone, opacity 0.1, scales the mean distance to the 3 nearest
   neighbours, no Gaussian cap. Two differences we cannot express: its quaternions start random and ours
   the identity (the same covariances: the initial scales are isotropic), and our initial scales are clipped
   to 1e-4..0.1 of the scene radius.
3. with ``--demo``: the demo's settings (DEMO_CONFIG: stereo and random seeds, larger rates, 100k cap).

Prints steps/s, peak CUDA memory, Gaussians and held-out PSNR / SSIM / LPIPS per row. ``--sfm`` defaults to
the demo flight reconstructed by the sfm stage (needs pycolmap). ``--device cpu`` runs it on the CPU
(slowly). ``--smoke``: a tiny generated model (tests/train/fixtures), 10 steps, on CUDA when there is one,
else on the CPU (seconds). The last line printed is a JSON record (bench/record.py) with the GPU's name.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import add_smoke_flag, emit  # noqa: E402

from spaceport.demo import DEMO_CONFIG  # noqa: E402
from spaceport.stages.runner import run_stage  # noqa: E402

SIMPLE_TRAINER_STEPS = 30_000
"""gsplat simple_trainer's max_steps, which its schedule is written for (``--steps_scaler`` scales it)."""
NO_CAP = 10**9


def simple_trainer(steps: int) -> dict[str, Any]:
    """gsplat examples/simple_trainer.py's defaults (Config + DefaultStrategy), scaled to ``steps``."""
    s = steps / SIMPLE_TRAINER_STEPS
    return {
        "iterations": steps, "densifyFrom": int(500 * s), "densifyUntil": int(15_000 * s),
        "densifyEvery": max(1, int(100 * s)), "opacityResetEvery": max(1, int(3_000 * s)),
        "densifyGradThreshold": 0.0002, "shDegree": 3, "shDegreeInterval": max(1, int(1_000 * s)),
        "positionLr": 1.6e-4, "scaleLr": 5e-3, "opacityLr": 5e-2, "rotationLr": 1e-3, "colorLr": 2.5e-3,
        "ssimWeight": 0.2, "mseWeight": 0.0, "opacityReg": 0.0, "maxGaussians": NO_CAP,
        "initRandomPoints": 0, "initStereoPoints": 0, "appearance": "off", "freeSpacePrune": 0.0,
        "randomBackground": False, "antialiased": False, "strategy": "default", "halfResolutionSteps": 0,
    }


def settings(steps: int, device: str, demo: bool = False) -> dict[str, dict[str, Any]]:
    common = {"downscale": DEMO_CONFIG["train"]["downscale"], "device": device, "checkpointEvery": 10**6}
    rows = {
        "ours (defaults)": {**common, "iterations": steps},
        f"gsplat simple_trainer (steps_scaler {steps / SIMPLE_TRAINER_STEPS:.3g})": {**common, **simple_trainer(steps)},
    }
    if demo:
        rows["ours (demo settings)"] = {**DEMO_CONFIG["train"], **common, "iterations": steps}
    return rows


def smoke_sized(config: dict[str, Any], steps: int) -> dict[str, Any]:
    """A row's settings on the tiny smoke model: full size, seeds and half-size steps scaled down."""
    out = {**config, "downscale": 1.0, "halfResolutionSteps": min(config.get("halfResolutionSteps", 0), steps // 2)}
    if out.get("initStereoPoints"):
        out.update(initStereoPoints=500, initRandomPoints=200)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sfm", help="an sfm stage output (default: the demo flight, reconstructed here)")
    parser.add_argument("--steps", type=int, default=7000)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--demo", action="store_true", help="also a row with the demo's settings")
    add_smoke_flag(parser)
    args = parser.parse_args()
    import torch

    if args.smoke:
        args.steps = 10
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        args.demo = True
    gpu = torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else None
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-gpu-") as tmp:
        work = Path(tmp)
        sfm = Path(args.sfm) if args.sfm else None
        if sfm is None and args.smoke:
            from tests.train.fixtures import write_sfm_output

            write_sfm_output(work / "sfm", n_gaussians=300, n_views=8, width=64, height=48, n_points=200, seed=7)
            sfm = work / "sfm"
        elif sfm is None:
            from spaceport.synthetic import generate_flight

            generate_flight(work / "photos", preset="demo")
            run_stage("sfm", str(work / "photos"), str(work / "sfm"), DEMO_CONFIG["sfm"])
            sfm = work / "sfm"
        print(f"{args.steps} steps on {gpu or args.device}, model {sfm}", flush=True)
        for i, (name, config) in enumerate(settings(args.steps, args.device, args.demo).items()):
            if args.smoke:
                config = smoke_sized(config, args.steps)
            t0 = time.perf_counter()
            result = run_stage("train", str(sfm), str(work / f"train-{i}"), config)
            m = result.metrics
            lpips = f", LPIPS {m['lpips']:.3f}" if "lpips" in m else ""
            gib = m["peakMemoryBytes"] / 2**30  # CUDA: this run's peak; CPU: the process's peak RSS so far
            memory = "CUDA memory" if m["device"] == "cuda" else "RSS"
            print(f"{name:40s} {m['stepsPerSecond']:7.1f} steps/s, peak {memory} {gib:5.2f} GiB, "
                  f"{m['gaussians']:>9,} Gaussians, held-out PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}{lpips}, "
                  f"stage {time.perf_counter() - t0:.0f} s", flush=True)
            results[name] = {"stepsPerSecond": m["stepsPerSecond"], "peakMemoryBytes": m["peakMemoryBytes"],
                             "gaussians": m["gaussians"], "psnr": m["psnr"], "ssim": m["ssim"],
                             "lpips": m.get("lpips"), "stageSeconds": time.perf_counter() - t0,
                             "device": m["device"], "warnings": result.warnings, "settings": config}
    emit("train_gpu", smoke=args.smoke, settings={"steps": args.steps, "device": args.device, "gpu": gpu,
                                                   "sfm": args.sfm}, results=results)


if __name__ == "__main__":
    main()

"""Training on a GPU: the demo's settings vs gsplat's own defaults, on the same SfM model (issue #4, item 8).

    python bench/train_gpu.py [--sfm DIR] [--steps N (default: the demo's)] [--device cuda]

Three runs of the train stage on one model: the demo's settings (ours: seeds, rates, half-size steps,
opacity term, Gaussian cap), gsplat simple_trainer's defaults (3DGS's learning rates, SfM points only, SH
degree 3, no cap), and the same with gsplat's MCMC strategy (1M cap) — each for the same number of
steps at the demo's resolution. Prints steps/s, peak CUDA memory and held-out PSNR / SSIM / LPIPS.
``--sfm`` defaults to the demo flight reconstructed by the sfm stage (needs pycolmap). ``--device cpu``
runs the same comparison on the CPU (slowly). ``--smoke``: a tiny generated model (tests/train/fixtures),
10 steps, on CUDA when there is one, else on the CPU (seconds). The last line printed is a JSON record
(bench/record.py) with the GPU's name.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))

from bench.record import add_smoke_flag, emit  # noqa: E402

from spaceport.demo import DEMO_CONFIG  # noqa: E402
from spaceport.stages.runner import run_stage  # noqa: E402


def settings(steps: int, device: str) -> dict[str, dict[str, Any]]:
    resolution = {"downscale": DEMO_CONFIG["train"]["downscale"], "device": device, "iterations": steps,
                  "checkpointEvery": 10**6}
    return {
        "ours (demo settings)": {**DEMO_CONFIG["train"], **resolution},
        "gsplat defaults": {**resolution, "shDegree": 3},
        "gsplat MCMC": {**resolution, "shDegree": 3, "strategy": "mcmc", "maxGaussians": 1_000_000},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sfm", help="an sfm stage output (default: the demo flight, reconstructed here)")
    parser.add_argument("--steps", type=int, default=DEMO_CONFIG["train"]["iterations"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    add_smoke_flag(parser)
    args = parser.parse_args()
    import torch

    if args.smoke:
        args.steps = 10
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
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
        print(f"{args.steps} steps on {gpu or args.device}, model {sfm}")
        for i, (name, config) in enumerate(settings(args.steps, args.device).items()):
            if args.smoke:  # the demo's schedule scaled down to the tiny model
                config.update(halfResolutionSteps=min(config.get("halfResolutionSteps", 0), args.steps // 2),
                              downscale=1.0, **({"initStereoPoints": 500, "initRandomPoints": 200}
                                                if "initStereoPoints" in config else {}))
            t0 = time.perf_counter()
            m = run_stage("train", str(sfm), str(work / f"train-{i}"), config).metrics
            lpips = f", LPIPS {m['lpips']:.3f}" if "lpips" in m else ""
            gib = m["peakMemoryBytes"] / 2**30  # CUDA: this run's peak; CPU: the process's peak RSS so far
            memory = "CUDA memory" if m["device"] == "cuda" else "RSS"
            print(f"{name:22s} {m['stepsPerSecond']:7.1f} steps/s, peak {memory} {gib:5.2f} GiB, "
                  f"{m['gaussians']:>9,} Gaussians, held-out PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}{lpips}, "
                  f"stage {time.perf_counter() - t0:.0f} s", flush=True)
            results[name] = {"stepsPerSecond": m["stepsPerSecond"], "peakMemoryBytes": m["peakMemoryBytes"],
                             "gaussians": m["gaussians"], "psnr": m["psnr"], "ssim": m["ssim"],
                             "lpips": m.get("lpips"), "stageSeconds": time.perf_counter() - t0}
    emit("train_gpu", smoke=args.smoke, settings={"steps": args.steps, "device": args.device, "gpu": gpu,
                                                   "sfm": args.sfm}, results=results)


if __name__ == "__main__":
    main()

"""Training benchmark on CPU: the compiled compositor vs a pure-torch one, a full step, and a demo-like run.

    .venv/bin/python bench/train.py [--steps 1500] [--flight] [--skip-reference] [--smoke]

1. Compositing, forward + backward, 20k Gaussians at 256x256: ours vs the pure-torch tile compositor
   (spaceport.stages.train.reference, the same maths with autograd) -> speed ratio.
2. One full training step (forward, L1 + SSIM loss, backward, fused Adam) for 50k Gaussians at 320x240.
3. Steps/s and held-out PSNR of the training stage on a demo-like scene (40 views at 320x240, generated
   with tests/train/fixtures; ``--flight`` uses spaceport.synthetic's demo flight + the sfm stage), and
   the same loop with the pure-torch compositor against ours over the same steps (ratio): each side trains
   from the same start at the full image size for a few steps and for a few more, timed by the stage itself
   over its training steps only (``stepsPerSecond``: after loading and seeding, before the final evaluation
   and writes); the difference of the two is the time of the extra steps, without either side's first step.
Timings on a shared 2-core machine are noisy: each number is a median, and wall and CPU seconds are shown.
``--smoke`` runs all three on tiny inputs in seconds; the last line printed is a JSON record (bench/record.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench.record import add_smoke_flag, emit  # noqa: E402

from spaceport.demo import DEMO_CONFIG  # noqa: E402
from spaceport.stages.train import rasterize as rz  # noqa: E402
from spaceport.stages.train.metrics import ssim  # noqa: E402
from spaceport.stages.train.reference import composite_reference  # noqa: E402

FULL = {"compositor": (20_000, 256, 7), "step": (50_000, 320, 240, 9), "reference_steps": (2, 8),
        "fixture": {"n_gaussians": 4000, "n_views": 40, "width": 320, "height": 240, "n_points": 3000}}
SMOKE = {"compositor": (2_000, 64, 2), "step": (2_000, 64, 48, 4), "reference_steps": (1, 3),
         "fixture": {"n_gaussians": 300, "n_views": 8, "width": 64, "height": 48, "n_points": 200}, "steps": 10}
"""Problem sizes: Gaussians, image size and rounds of [1], [2]; the fixture scene and steps of [3]."""
RESULTS: dict[str, Any] = {}
"""Every number the tables print, for the JSON record."""


def random_scene(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([4.0, 3.0, 2.0]) + torch.tensor([0.0, 0.0, 5.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.log(torch.rand(n, 3, generator=g) * 0.03 + 0.005)
    opacities = torch.logit(torch.rand(n, generator=g) * 0.8 + 0.1)
    sh0 = torch.randn(n, 1, 3, generator=g) * 0.5
    shn = torch.randn(n, 15, 3, generator=g) * 0.1
    return [t.requires_grad_(True) for t in (means, quats, scales, opacities, sh0, shn)]


def camera(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    f = 0.94 * width
    return torch.eye(4), torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def composite_inputs(params: list[torch.Tensor], width: int, height: int) -> tuple[Any, ...]:
    means, quats, scales, opacities, sh0, shn = params
    view, K = camera(width, height)
    m2, conics, depths, radii = rz.project(means, quats, torch.exp(scales), view, K, width, height,
                                          torch.sigmoid(opacities))
    colors = rz.sh_colors(means, torch.cat([sh0, shn], 1), 3, torch.zeros(3))
    return m2.detach(), conics.detach(), colors.detach(), torch.sigmoid(opacities).detach(), radii, depths.detach()


def time_composite(fn: Any, inputs: tuple[Any, ...], repeats: int, torch_threads: int = 1) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` forward + backward, with torch on ``torch_threads`` threads."""
    m2, conics, colors, opac, radii, depths = inputs
    walls, cpus = [], []
    torch.set_num_threads(torch_threads)
    try:
        for _ in range(repeats):
            leaves = [t.clone().requires_grad_(True) for t in (m2, conics, colors, opac)]
            w0, c0 = time.perf_counter(), time.process_time()
            image, alpha = fn(*leaves, radii, depths)
            (image.sum() + alpha.sum()).backward()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    finally:
        torch.set_num_threads(1)
    return float(np.median(walls)), float(np.median(cpus))


def bench_compositor(skip_reference: bool, sizes: tuple[int, int, int] = FULL["compositor"]) -> None:
    """``sizes``: Gaussians, image side, and alternating rounds of ours (5 calls) and the reference (1 call)."""
    count, width, rounds = sizes
    height = width
    inputs = composite_inputs(random_scene(count), width, height)

    def ours(m2: torch.Tensor, con: torch.Tensor, col: torch.Tensor, op: torch.Tensor, radii: torch.Tensor,
             depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = radii.numpy()
        bins = rz.tile_binning.bin_tiles(m2.detach().numpy(), con.detach().numpy(), op.detach().numpy(), r,
                                         depths.numpy(), width, height)
        return rz.Composite.apply(m2, con, col, op, bins, width, height)

    def reference(m2: torch.Tensor, con: torch.Tensor, col: torch.Tensor, op: torch.Tensor, radii: torch.Tensor,
                  depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return composite_reference(m2, con, col, op, radii, depths, width, height)

    time_composite(ours, inputs, 1)  # JIT load
    wall, cpu = time_composite(ours, inputs, 7)
    print(f"[1] compositor fwd+bwd, {count} Gaussians, {width}x{height}: ours {wall * 1e3:.1f} ms wall "
          f"({cpu * 1e3:.1f} ms CPU)")
    parts = compositor_parts(inputs, width, height)
    print("    " + ", ".join(f"{name} {ms:.2f}" for name, ms in parts.items()) + " ms (medians of 30 calls in a loop)")
    RESULTS["compositor"] = {"gaussians": count, "width": width, "height": height, "oursMs": wall * 1e3,
                             "oursCpuMs": cpu * 1e3, "partsMs": parts}
    if skip_reference:
        return
    # the reference at its best, torch on every core (5-10% faster than one thread here); ours as the stage
    # runs it, torch on one thread and the kernels on every core
    ref_threads = os.cpu_count() or 1
    time_composite(reference, inputs, 1, ref_threads)  # its first call pays torch's allocations (~2x): warm it
    # This VM's speed drifts by tens of percent over seconds: alternate the two, so that both ran under the
    # same conditions, and give the ratio of the medians and of the best calls (timeit's advice: noise here
    # only ever adds time). ours is timed right after the reference, which leaves its caches cold.
    ours_walls, ref_walls, ours_cpus, ref_cpus = [], [], [], []
    for _ in range(rounds):
        for walls, cpus, fn, repeats, threads in ((ours_walls, ours_cpus, ours, 5, 1),
                                                  (ref_walls, ref_cpus, reference, 1, ref_threads)):
            for _ in range(repeats):
                wall_s, cpu_s = time_composite(fn, inputs, 1, threads)
                walls.append(wall_s)
                cpus.append(cpu_s)
    med = {k: float(np.median(v)) for k, v in (("ours", ours_walls), ("ref", ref_walls), ("ours_cpu", ours_cpus),
                                                ("ref_cpu", ref_cpus))}
    print(f"    pure-torch compositor {med['ref'] * 1e3:.0f} ms wall (best {min(ref_walls) * 1e3:.0f}), ours "
          f"{med['ours'] * 1e3:.1f} ms (best {min(ours_walls) * 1e3:.1f}) in {rounds} alternating rounds -> ours is "
          f"{med['ref'] / med['ours']:.0f}x faster (medians; best calls {min(ref_walls) / min(ours_walls):.0f}x), "
          f"{med['ref_cpu'] / med['ours_cpu']:.0f}x in CPU time")
    RESULTS["compositor"].update(alternatingRounds=rounds, oursMedianMs=med["ours"] * 1e3,
                                 referenceMedianMs=med["ref"] * 1e3, ratio=med["ref"] / med["ours"],
                                 ratioBestCalls=min(ref_walls) / min(ours_walls),
                                 ratioCpu=med["ref_cpu"] / med["ours_cpu"])


def compositor_parts(inputs: tuple[Any, ...], width: int, height: int, calls: int = 30) -> dict[str, float]:
    """Median milliseconds of each part of ours: binning, the forward pass (packing the intersections and
    compositing) and the backward one (per-intersection rows and their sums per Gaussian)."""
    m2, conics, colors, opac, radii, depths = (t.detach() for t in inputs)
    times: dict[str, list[float]] = {"binning": [], "forward": [], "backward": []}
    for _ in range(calls):
        leaves = [t.clone().requires_grad_(True) for t in (m2, conics, colors, opac)]
        t0 = time.perf_counter()
        bins = rz.tile_binning.bin_tiles(m2.numpy(), conics.numpy(), opac.numpy(), radii.numpy(), depths.numpy(),
                                         width, height)
        t1 = time.perf_counter()
        image, alpha = rz.Composite.apply(*leaves, bins, width, height)
        t2 = time.perf_counter()
        (image.sum() + alpha.sum()).backward()
        t3 = time.perf_counter()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            times[key].append(value)
    return {key: float(np.median(values)) * 1e3 for key, values in times.items()}


def bench_step(sizes: tuple[int, int, int, int] = FULL["step"]) -> None:
    """``sizes``: Gaussians, width, height, steps (the first two are not counted)."""
    count, width, height, steps = sizes
    params = random_scene(count)
    view, K = camera(width, height)
    optimizers = [torch.optim.Adam([p], lr=1e-3, eps=1e-15, fused=True) for p in params]
    target = torch.rand(height, width, 3)
    parts: dict[str, list[float]] = {"forward": [], "loss": [], "backward": [], "adam": [], "total": []}
    for i in range(steps):
        t0 = time.perf_counter()
        means, quats, scales, opacities, sh0, shn = params
        image, _, _ = rz.rasterize(means, quats, torch.exp(scales), torch.sigmoid(opacities),
                                   torch.cat([sh0, shn], 1), view, K, width, height, 3)
        t1 = time.perf_counter()
        loss = 0.8 * (image - target).abs().mean() + 0.2 * (1 - ssim(image, target))
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if i >= 2:
            for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
                parts[key].append(value)
    med = {k: float(np.median(v)) * 1e3 for k, v in parts.items()}
    print(f"[2] full step, {count} Gaussians, {width}x{height}: {med['total']:.1f} ms (median; forward "
          f"{med['forward']:.1f}, L1+SSIM {med['loss']:.1f}, backward {med['backward']:.1f}, fused Adam "
          f"{med['adam']:.1f}); goal <= 100 ms")
    RESULTS["step"] = {"gaussians": count, "width": width, "height": height, "ms": med}


def demo_input(work: Path, flight: bool, fixture: dict[str, int] = FULL["fixture"]) -> tuple[Path, float]:
    if flight:
        from spaceport.stages.runner import run_stage
        from spaceport.synthetic import generate_flight

        if not (work / "sfm" / "result.json").exists():  # reused across runs with --workdir
            generate_flight(work / "photos", preset="demo")
            run_stage("sfm", str(work / "photos"), str(work / "sfm"), {})
        return work / "sfm", DEMO_CONFIG["train"].get("downscale", 1.0)
    from tests.train.fixtures import write_sfm_output

    write_sfm_output(work / "sfm", **fixture, seed=7)
    return work / "sfm", 1.0


def bench_demo(steps: int, flight: bool, workdir: str | None, max_gaussians: int, smoke: bool = False) -> None:
    from spaceport.stages.runner import run_stage

    sizes = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(workdir or tmp)
        for name in ("train", "same-steps", "same-steps-torch"):
            shutil.rmtree(work / name, ignore_errors=True)
        sfm, downscale = demo_input(work, flight, sizes["fixture"])
        # exactly what `spaceport demo` trains with (its resolution and schedule), unless told otherwise
        config = {**DEMO_CONFIG["train"], "downscale": downscale, "checkpointEvery": 10 ** 6}
        if smoke:  # a few steps on the tiny fixture, with the demo's schedule scaled down to fit
            config.update(iterations=sizes["steps"], halfResolutionSteps=sizes["steps"] // 2,
                          initStereoPoints=500, initRandomPoints=200)
        if steps:
            config["iterations"] = steps
        if max_gaussians:
            config["maxGaussians"] = max_gaussians
        steps = config["iterations"]
        t0 = time.perf_counter()
        result = run_stage("train", str(sfm), str(work / "train"), config)
        stage_s = time.perf_counter() - t0
        m = result.metrics
        start = m.get("initialPsnr", float("nan"))
        print(f"[3] demo-like scene ({'synthetic flight + sfm' if flight else 'fixture'}), {steps} steps: "
              f"held-out PSNR {m['psnr']:.2f} dB (from {start:.2f}), SSIM {m['ssim']:.3f}, "
              f"{m['gaussians']} Gaussians, {m['stepsPerSecond']:.1f} steps/s, stage {stage_s:.0f} s; "
              "goal >= 27 dB within 180 s")
        RESULTS["training"] = {"scene": "flight" if flight else "fixture", "steps": steps, "psnr": m["psnr"],
                               "ssim": m["ssim"], "initialPsnr": start, "gaussians": m["gaussians"],
                               "stepsPerSecond": m["stepsPerSecond"], "stageSeconds": stage_s}
        # The same work on both sides, timed by the stage's own loop clock: steps at the full image size from
        # the same start; the difference between a short and a longer run leaves out each side's first step.
        few, more = sizes["reference_steps"]
        step_s = {"ours": same_steps(sfm, work / "same-steps", config, few, more)}
        original = rz.rasterize_cpu
        rz.rasterize_cpu = reference_rasterize_cpu
        try:
            step_s["reference"] = same_steps(sfm, work / "same-steps-torch", config, few, more)
        finally:
            rz.rasterize_cpu = original
        ratio = step_s["reference"] / step_s["ours"]
        print(f"    steps {few + 1}-{more} at full size, training loop only: pure-torch compositor "
              f"{step_s['reference'] * 1e3:.0f} ms a step, ours {step_s['ours'] * 1e3:.1f} ms -> ours {ratio:.0f}x")
        RESULTS["training"].update(sameSteps=[few + 1, more], oursStepMs=step_s["ours"] * 1e3,
                                   referenceStepMs=step_s["reference"] * 1e3, ratio=ratio)


def same_steps(sfm: Path, out: Path, config: dict[str, Any], few: int, more: int) -> float:
    """Seconds a training step takes after the first ``few``: two runs of the stage at the full image size,
    ``few`` and ``more`` steps, each timed by the stage over its loop only (``durations.training``, to 10 ms:
    ``stepsPerSecond`` is rounded to 2 decimals, 4% of the reference's 0.3)."""
    from spaceport.stages.runner import run_stage

    loop_s = []
    for steps in (few, more):
        shutil.rmtree(out, ignore_errors=True)
        m = run_stage("train", str(sfm), str(out), {**config, "iterations": steps, "halfResolutionSteps": 0}).metrics
        loop_s.append(m["durations"]["training"])
    return max(loop_s[1] - loop_s[0], 1e-9) / (more - few)


def reference_rasterize_cpu(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                            sh: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                            sh_degree: int, *, antialiased: bool = False,
                            ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """rz.rasterize_cpu with the pure-torch compositor in place of ours: the same projection, the same
    antialiasing factor, the same info for the densification strategy."""
    m2, conics, depths, radii = rz.project(means, quats, scales, viewmat, K, width, height, opacities, antialiased)
    campos = -viewmat[:3, :3].T @ viewmat[:3, 3]
    colors = rz.sh_colors(means, sh, sh_degree, campos)
    if antialiased:
        opacities = opacities * rz.aa_compensation(conics)
    m2b = m2[None]
    image, alpha = composite_reference(m2b[0], conics, colors, opacities, radii, depths, width, height)
    return image, alpha, {"means2d": m2b, "radii": radii[None], "depths": depths[None], "width": width,
                          "height": height, "n_cameras": 1, "gaussian_ids": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=0, help="training steps (default: the demo's)")
    parser.add_argument("--flight", action="store_true", help="demo flight + sfm stage instead of the fixture")
    parser.add_argument("--skip-reference", action="store_true", help="skip the slow pure-torch compositor")
    parser.add_argument("--only", choices=["compositor", "step", "demo"])
    parser.add_argument("--max-gaussians", type=int, default=0, help="default: the demo's cap")
    parser.add_argument("--workdir", help="keep the demo's inputs here and reuse them on the next run")
    add_smoke_flag(parser)
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    # as the stage does on CPU: the kernels own the cores, torch runs its small ops on one thread
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.only in (None, "compositor"):
        bench_compositor(args.skip_reference, sizes["compositor"])
    if args.only in (None, "step"):
        bench_step(sizes["step"])
    if args.only in (None, "demo"):
        bench_demo(args.steps, args.flight, args.workdir, args.max_gaussians, args.smoke)
    emit("train", smoke=args.smoke, settings={k: v for k, v in vars(args).items() if k != "smoke"}, results=RESULTS)


if __name__ == "__main__":
    main()

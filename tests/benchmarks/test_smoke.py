"""Every benchmark in bench/ runs in its --smoke mode and prints a JSON record with the numbers it measured.

A script that no longer runs (a renamed argument, a moved module) fails here instead of rotting until the
next time someone measures. Each runs as a subprocess exactly as a person would run it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.record import PREFIX

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_smoke(script: str, timeout: float = 240) -> dict[str, Any]:
    """Run ``bench/<script> --smoke``; its last BENCH line as a dict."""
    # This checkout's package, not whichever one the environment installed (a worktree beside another checkout).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator")])}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{script} --smoke exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-3000:]}")
    records = [line[len(PREFIX):] for line in proc.stdout.splitlines() if line.startswith(PREFIX)]
    assert len(records) == 1, f"{script} printed {len(records)} JSON records:\n{proc.stdout[-3000:]}"
    record = json.loads(records[0])
    assert record["bench"] == Path(script).stem and record["smoke"] is True
    assert record["machine"]["cores"] >= 1 and len(record["machine"]["id"]) == 12
    table = proc.stdout.split(PREFIX)[0]
    assert len(table.strip().splitlines()) >= 2, "the table for people is missing"
    return record["results"]


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_sfm() -> None:
    r = run_smoke("sfm.py")
    assert set(r["matching"]) == {"exhaustive", "sequential", "spatial"}
    for mode in r["matching"].values():
        assert positive(mode["matchSeconds"]) and mode["pairs"] > 0
        registered, total = map(int, mode["registered"].split("/"))
        assert total == 16 and registered >= 12
    assert positive(r["mappers"]["global"]["mapSeconds"]) and "/16" in r["mappers"]["global"]["registered"]


def test_sfm_large() -> None:
    """bench/sfm_large.py: the stage twice on one generated flight (32 photos), each run with its time and memory."""
    r = run_smoke("sfm_large.py")
    assert set(r) == {"defaults", "reference"}
    for run in r.values():
        assert run["images"] == 32 and run["registered"] >= 28 and run["matchingMode"] == "spatial"
        assert run["imagePairs"] >= run["verifiedPairs"] > 0 and run["featuresPerImage"] == 8192
        assert {"features", "matching", "mapping"} <= set(run["stepPeakBytes"]) and positive(run["peakRssBytes"])
        assert all(positive(run["durations"][step]) for step in ("features", "matching", "mapping"))
        assert run["centreErrorMaxMeters"] >= run["centreErrorMedianMeters"] >= 0
    # each run's own process: the reference's peak does not include the first run's
    assert r["reference"]["peakRssBytes"] < 2 * r["defaults"]["peakRssBytes"]


def test_real() -> None:
    """bench/real.py on a tiny generated flight: the whole `spaceport run`, rows computed from its outputs."""
    (row,) = run_smoke("real.py", timeout=400)["rows"]
    assert row["exit"] == 0 and row["photos"] == 8 and row["registered"] >= 6  # 7 or 8 of 8 seen
    assert row["gpsMedianH"] < 1.0 and positive(row["psnr"]) and row["sideBySide"] >= 1 and row["sogBytes"] > 0


def test_train() -> None:
    r = run_smoke("train.py")
    assert positive(r["compositor"]["oursMs"]) and positive(r["compositor"]["ratio"])
    assert positive(r["step"]["ms"]["total"])
    training = r["training"]
    assert training["steps"] == 10 and training["gaussians"] > 0 and positive(training["psnr"])
    # ours and the reference timed over the same steps, by the same clock
    assert training["sameSteps"] == [2, 3]
    assert positive(training["oursStepMs"]) and positive(training["referenceStepMs"])
    assert training["ratio"] == pytest.approx(training["referenceStepMs"] / training["oursStepMs"])


def test_train_gpu() -> None:
    r = run_smoke("train_gpu.py")
    assert set(r) == {"ours (defaults)", "gsplat simple_trainer (steps_scaler 0.000333)", "ours (demo settings)"}
    for run in r.values():
        assert positive(run["stepsPerSecond"]) and run["gaussians"] > 0 and positive(run["psnr"])
    gsplat = r["gsplat simple_trainer (steps_scaler 0.000333)"]["settings"]
    assert gsplat["maxGaussians"] >= 10**9 and gsplat["initRandomPoints"] == gsplat["initStereoPoints"] == 0
    assert r["ours (defaults)"]["settings"]["iterations"] == 10


def test_train_gpu_reproduces_simple_trainers_defaults() -> None:
    """The second row is gsplat's own defaults: DefaultStrategy's, read from the installed gsplat, and
    simple_trainer's Config (30,000 steps, SH interval 1,000, init opacity 0.1, its learning rates)."""
    from bench.train_gpu import simple_trainer
    from gsplat.strategy import DefaultStrategy

    from spaceport.api import TrainOptions
    from spaceport.stages.train.loop import refine_steps

    ref = DefaultStrategy()
    options = TrainOptions.model_validate(simple_trainer(30_000))
    assert options.densify_schedule() == (ref.refine_start_iter, ref.refine_stop_iter, ref.refine_every)
    assert options.opacity_reset_every == ref.reset_every and options.densify_grad_threshold == ref.grow_grad2d
    assert refine_steps(options) == list(range(600, 15_000, 100))
    assert (options.sh_degree, options.sh_degree_interval, options.ssim_weight) == (3, 1000, 0.2)
    assert (options.position_lr, options.scale_lr, options.opacity_lr, options.rotation_lr, options.color_lr) == (
        1.6e-4, 5e-3, 5e-2, 1e-3, 2.5e-3)
    # --steps_scaler: 7,000 steps scale every interval by 7/30
    scaled = TrainOptions.model_validate(simple_trainer(7_000))
    assert scaled.densify_schedule() == (116, 3500, 23) and scaled.opacity_reset_every == 700


def test_compress() -> None:
    r = run_smoke("compress.py")
    side = r["sideBySide"]
    assert side["splats"] == 500
    assert positive(side["rows"][".sog bytes"]["ours"]) and positive(side["rows"][".sog bytes"]["theirs"])
    assert side["rows"]["matched unique"]["ours"] > 0.99
    # splat-transform ran here, now: a same-machine ratio, and the record says where it ran
    assert side["reference"]["sameMachine"] is True and side["reference"]["cached"] is None
    assert positive(side["speedUpWall"])
    assert positive(r["scale"]["2000"]["sogBytes"])


@pytest.mark.parametrize("script", ["operator_latency.py", "operator_load.py"])
def test_operator(script: str) -> None:
    r = run_smoke(script)
    assert set(r) == {"volume", "s3"}, "both storages are measured"
    for storage in r.values():
        assert storage["ok"] is True
    if script == "operator_load.py":
        for storage in r.values():
            assert storage["succeeded"] == storage["count"] == storage["exactlyThreeJobs"]
            assert storage["createdTwice"] == 0 and positive(storage["firstJobP99Seconds"])
    else:
        for storage in r.values():
            assert storage["burstExactlyOneJob"] == storage["burst"] and positive(storage["sequentialP50Ms"])


def test_streamed() -> None:
    r = run_smoke("streamed.py")
    c = r["compress"]
    assert c["lodCounts"] == [6000, 3000, 1500] and c["lodChunks"] > 3
    assert 0 < c["firstViewBytes"] < c["streamedBytes"] and c["sogBytes"] > 0
    for step in ("decimateSeconds", "streamedSeconds"):
        assert positive(c["durations"][step]), step
    if r["browser"]:  # timed where Chromium is installed (make test installs it)
        assert r["browser"]["streamed"]["firstFrameSplats"] == 1500  # revealed at the coarsest level
        assert r["browser"]["sog"]["firstFrameSplats"] == 6000


def test_blocks() -> None:
    r = run_smoke("blocks.py")
    assert r["blocks"] == 2 and r["stepsPerBlock"] == 60
    for side in ("whole", "merged"):
        assert r[side]["psnr"] > 10 and r[side]["gaussians"] > 0 and positive(r[side]["seconds"]), side
    assert r["psnrDifferenceDb"] == round(r["merged"]["psnr"] - r["whole"]["psnr"], 3)
    assert positive(r["secondsRatio"]) and len(r["pngs"]) == 2  # written, then removed with the smoke's folder

"""SfM benchmark at survey size: the SfM stage on a generated flight of 1,000+ small photos, time and memory.

    .venv/bin/python bench/sfm_large.py [--images 1000] [--width 320] [--height 240] [--seed 5] [--cache DIR]
    .venv/bin/python bench/sfm_large.py --smoke     # 32 photos at 320x240 (under a minute)

The flight is rendered once and kept under ``--cache`` (rendering 1,000 photos takes ~9 minutes on 2 cores).
The stage then runs twice on the same photos, each run in a fresh process (so each peak is its own): first
with this tree's defaults (the global mapper), then with the other mapper (``REFERENCE``: incremental), the
choice the defaults make at this size. Each run reports seconds and peak resident memory (the process's, COLMAP's
threads included) per step, the matched pairs, registered photos, the cameras' median distance from their GPS
tags, and the largest camera-centre error against the ground truth (after a similarity alignment, as a share of
the flight's extent). Ratios: reference / defaults. The last line printed is a JSON record (bench/record.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import numpy as np  # noqa: E402
from bench.record import add_flight_arguments, add_smoke_flag, emit  # noqa: E402

REFERENCE: dict[str, Any] = {"mapper": "incremental"}
"""The mapper the defaults do not pick, on the same photos."""
STEPS = ("prepare", "features", "matching", "mapping", "undistortion", "upload")


def cached_flight(cache: Path, images: int, width: int, height: int, seed: int) -> tuple[Path, float]:
    """The flight's folder (photos and flight.json), rendered unless the cache holds it; seconds it took."""
    from spaceport.synthetic import generate_flight

    folder = cache / f"flight-{images}-{width}x{height}-seed{seed}"
    if (folder / "flight.json").is_file():
        return folder, 0.0
    partial = folder.with_name(folder.name + ".partial")
    t = time.perf_counter()
    generate_flight(partial, n_images=images, width=width, height=height, seed=seed, write_truth=True)
    partial.rename(folder)  # flight.json is written last: a folder without it was interrupted
    return folder, time.perf_counter() - t


class _PeakPerStep(logging.Handler):
    """Reads the process's peak resident memory when the stage logs that a step took so long, then resets the
    peak (Linux: /proc/self/clear_refs), so each step's peak is its own (memory a step keeps counts in the next)."""

    def __init__(self) -> None:
        super().__init__()
        self.peaks: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        step, _, rest = record.getMessage().partition(" took ")
        if step in STEPS and rest.endswith(" s"):
            self.peaks[step] = _peak_bytes()
            _reset_peak()


def _peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # not Linux, or not allowed: a step's peak then includes the steps before
        Path("/proc/self/clear_refs").write_text("5")


def run_once(photos: str, config: dict[str, Any]) -> dict[str, Any]:
    """The SfM stage on ``photos`` with ``config``, in this (fresh) process; what it measured."""
    import pycolmap

    from spaceport.stages.runner import run_stage
    from spaceport.synthetic import Flight

    handler = _PeakPerStep()
    logger = logging.getLogger("spaceport.stages.sfm")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    flight = Flight.load(Path(photos) / "flight.json")
    with tempfile.TemporaryDirectory(prefix="bench-sfm-large-") as tmp:
        _reset_peak()
        t = time.perf_counter()
        result = run_stage("sfm", photos, str(Path(tmp) / "out"), config)
        wall = time.perf_counter() - t
        model = pycolmap.Reconstruction(str(Path(tmp) / "out" / "sparse"))
        centres = {im.name: np.asarray(im.projection_center()) for im in model.images.values() if im.has_pose}
    errors = _centre_errors(centres, flight)
    m = result.metrics
    return {"wallSeconds": round(wall, 1), "cpuSeconds": round(time.process_time(), 1),
            "durations": m["durations"], "stepPeakBytes": handler.peaks,
            "peakRssBytes": max(handler.peaks.values(), default=m["peakRssBytes"]),
            "matchingMode": m["matchingMode"], "imagePairs": m["imagePairs"], "verifiedPairs": m["verifiedPairs"],
            "mapper": m["mapper"], "featuresPerImage": m["featuresPerImage"], "meanFeatures": m["meanFeatures"],
            "registered": m["registeredImages"],
            "images": m["imagesUsed"], "registeredFraction": m["registeredFraction"], "points3D": m["points3D"],
            "gpsMedianMeters": m.get("gpsResidualMeters"), "centreErrorMedianMeters": float(np.median(errors)),
            "centreErrorMaxMeters": float(errors.max()), "maxCentreError": float(errors.max() / flight.extent),
            "focalLength": m["focalLength"], "warnings": len(result.warnings)}


def _centre_errors(centres: dict[str, np.ndarray], flight: Any) -> np.ndarray:
    """Metres between each registered camera and the truth, after the similarity that best aligns them."""
    from spaceport.synthetic.evaluate import umeyama

    truth = dict(zip(flight.image_names, flight.camera_centers, strict=True))
    names = sorted(centres)
    src, dst = np.array([centres[n] for n in names]), np.array([truth[n] for n in names])
    s, r, t = umeyama(src, dst)
    return np.linalg.norm(src @ (s * r).T + t - dst, axis=1)


def measure(photos: Path, config: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_once` in a fresh process: its peak memory is this run's alone."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_once, str(photos), config).result()


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def table(rows: dict[str, dict[str, Any]]) -> None:
    names = list(rows)
    print(f"{'':<26}" + "".join(f"{n:>22}" for n in names) + (f"{'ratio':>10}" if len(names) == 2 else ""))

    def line(label: str, values: list[Any], fmt: str, ratio: bool) -> None:
        cells = "".join(f"{'-' if v is None else format(v, fmt):>22}" for v in values)
        r = ""
        if ratio and len(values) == 2 and all(isinstance(v, int | float) and v for v in values):
            r = f"{values[1] / values[0]:>9.2f}x"
        print(f"{label:<26}{cells}{r}")

    for step in STEPS:
        line(f"{step} s", [rows[n]["durations"].get(step) for n in names], ".1f", True)
    line("total s (wall)", [rows[n]["wallSeconds"] for n in names], ".1f", True)
    line("CPU s", [rows[n]["cpuSeconds"] for n in names], ".1f", True)
    for step in STEPS[1:4]:
        print(f"{f'{step} peak MiB':<26}" + "".join(f"{_mib(rows[n]['stepPeakBytes'].get(step, 0)):>22}"
                                                     for n in names))
    line("peak MiB", [rows[n]["peakRssBytes"] / 2**20 for n in names], ",.0f", True)
    for label, key, fmt in (("features per image (cap)", "featuresPerImage", ","),
                            ("features per image", "meanFeatures", ",.0f"), ("matching", "matchingMode", ""),
                            ("pairs", "imagePairs", ","), ("verified pairs", "verifiedPairs", ","),
                            ("mapper", "mapper", ""), ("points", "points3D", ","),
                            ("GPS median m", "gpsMedianMeters", ".2f"),
                            ("centre error median m", "centreErrorMedianMeters", ".2f"),
                            ("centre error max m", "centreErrorMaxMeters", ".2f"),
                            ("max error / extent", "maxCentreError", ".2%"), ("focal length", "focalLength", "")):
        line(label, [rows[n][key] for n in names], fmt, False)
    print(f"{'registered':<26}" + "".join(f"{rows[n]['registered']:>15}/{rows[n]['images']:<6}" for n in names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_flight_arguments(ap, images=1000, width=320, height=240, seed=5)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "spaceport-bench-flights",
                    help="where generated flights are kept between runs")
    ap.add_argument("--no-reference", action="store_true", help="only this tree's defaults")
    add_smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.images, args.width, args.height = 32, 320, 240
    folder, render_s = cached_flight(args.cache, args.images, args.width, args.height, args.seed)
    print(f"flight: {args.images} photos {args.width}x{args.height} (seed {args.seed}) in {folder}"
          + (f", rendered in {render_s:.0f} s" if render_s else ", cached"))
    rows = {"defaults": measure(folder, {})}
    if not args.no_reference:
        rows["reference"] = measure(folder, REFERENCE)
    print()
    table(rows)
    emit("sfm_large", smoke=args.smoke, settings={"images": args.images, "width": args.width, "height": args.height,
                                                  "seed": args.seed, "reference": REFERENCE, "cached": not render_s},
         results=rows)


if __name__ == "__main__":
    main()

"""SfM benchmark: matching strategies and mappers on a generated drone flight, with ratios vs exhaustive.

    .venv/bin/python bench/sfm.py [--images 60] [--width 480] [--height 360] [--seed 11] [--no-global] [--smoke]

Features are extracted once; each matching mode then matches a copy of that database and the
incremental mapper runs on each result. The incremental and global mappers are then compared on the
database of the mode ``auto`` picks. Registration and the largest camera-centre error (after a
similarity alignment to the ground truth, as a share of the flight's extent) show that a faster mode
did not buy its speed with a worse model. Goal: auto's matching >= 2.5x faster than exhaustive at
100% registration. Wall and CPU seconds are shown: the machine is shared, so wall times are noisy.
Mapping keeps the EXIF focal length fixed when every photo has one, as the stage does.
``--smoke``: 16 images at 320x240 (seconds); the last line printed is a JSON record (bench/record.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import numpy as np  # noqa: E402
import pycolmap  # noqa: E402
from bench.record import add_flight_arguments, add_smoke_flag, emit  # noqa: E402

from spaceport.api.sfm import SfmOptions  # noqa: E402
from spaceport.stages.sfm import georef, reconstruct  # noqa: E402
from spaceport.stages.sfm.inputs import prepare_photos  # noqa: E402
from spaceport.storage import LocalStore  # noqa: E402
from spaceport.synthetic import generate_flight  # noqa: E402
from spaceport.synthetic.evaluate import centre_error  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def verified_pairs(database: Path) -> int:
    db = pycolmap.Database.open(database)
    try:
        return int(db.num_verified_image_pairs())
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_flight_arguments(ap, images=60, width=480, height=360, seed=11)
    ap.add_argument("--no-global", action="store_true", help="skip the global mapper")
    add_smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.images, args.width, args.height = 16, 320, 240
    results: dict[str, Any] = {}

    with tempfile.TemporaryDirectory(prefix="bench-sfm-") as tmp:
        work = Path(tmp)
        flight, gen_s, _ = timed(lambda: generate_flight(work / "photos", n_images=args.images, width=args.width,
                                                         height=args.height, seed=args.seed))
        print(f"flight: {args.images} images {args.width}x{args.height}, extent {flight.extent:.1f} m, "
              f"rendered in {gen_s:.1f} s")
        opts = SfmOptions()
        keys = LocalStore(flight.out_dir).list()
        photos, failed = prepare_photos(LocalStore(flight.out_dir), keys, work / "prepared", opts.max_image_size)
        if failed:
            raise SystemExit(f"unreadable generated images: {failed}")
        frame = georef.geo_frame(photos, print)
        # as the stage starts on a GPS-tagged flight whose photos all carry a focal length (focal.py)
        keep_focal = opts.focal_length != "refine" and all(p.focal_px is not None for p in photos)
        base = work / "features.db"
        _, feat_s, feat_cpu = timed(lambda: reconstruct.extract(base, work / "prepared", photos, opts))
        if frame is not None:
            georef.write_priors(base, frame)
        auto = reconstruct.choose_matching(opts, photos, frame)
        print(f"features: {feat_s:.1f} s wall, {feat_cpu:.1f} s CPU; auto picks {auto!r}\n")
        results.update(renderSeconds=gen_s, featureSeconds=feat_s, featureCpuSeconds=feat_cpu, auto=auto,
                       keepFocal=keep_focal, matching={}, mappers={})

        rows = []
        for mode in ("exhaustive", "sequential", "spatial"):
            db = work / f"{mode}.db"
            shutil.copy(base, db)
            _, m_s, m_cpu = timed(lambda db=db, mode=mode: reconstruct.match(db, mode, opts))
            models, map_s, _ = timed(
                lambda db=db, mode=mode: reconstruct.map_images(db, work / "prepared", work / f"map-{mode}",
                                                                "incremental", frame, keep_focal=keep_focal))
            rows.append((mode, verified_pairs(db), m_s, m_cpu, map_s, *_quality(models, flight)))
        ref = rows[0]
        print(f"{'matching':<12}{'pairs':>7}{'match s':>9}{'CPU s':>8}{'speed-up':>10}{'map s':>8}"
              f"{'registered':>12}{'max err':>9}{'total speed-up':>16}")
        for mode, pairs, m_s, m_cpu, map_s, reg, err in rows:
            mark = " <- auto" if mode == auto else ""
            print(f"{mode:<12}{pairs:>7}{m_s:>9.1f}{m_cpu:>8.1f}{ref[2] / m_s:>9.2f}x{map_s:>8.1f}"
                  f"{reg:>12}{err:>8.2%}{(ref[2] + ref[4]) / (m_s + map_s):>15.2f}x{mark}")
            results["matching"][mode] = {"pairs": pairs, "matchSeconds": m_s, "matchCpuSeconds": m_cpu,
                                         "speedUp": ref[2] / m_s, "mapSeconds": map_s, "registered": reg,
                                         "maxCentreError": err}

        if not args.no_global:
            print(f"\nmappers on the {auto} matches:")
            db = work / f"{auto}.db"
            inc_row = next(r for r in rows if r[0] == auto)
            models, g_s, g_cpu = timed(lambda: reconstruct.map_images(db, work / "prepared", work / "map-g",
                                                                     "global", frame, keep_focal=keep_focal))
            problem = reconstruct.unusable(models, frame, len(photos), opts.min_registered_fraction)
            notes = [f"the stage would fall back to incremental: global mapping {problem}"] if problem else []
            reg, err = _quality(models, flight)
            print(f"{'mapper':<14}{'map s':>8}{'CPU s':>8}{'registered':>12}{'max err':>9}{'time vs incremental':>21}")
            print(f"{'incremental':<14}{inc_row[4]:>8.1f}{'':>8}{inc_row[5]:>12}{inc_row[6]:>8.2%}{1.0:>20.2f}x")
            print(f"{'global':<14}{g_s:>8.1f}{g_cpu:>8.1f}{reg:>12}{err:>8.2%}{g_s / inc_row[4]:>20.2f}x")
            for note in notes:
                print(f"  note: {note}")
            results["mappers"] = {
                "incremental": {"mapSeconds": inc_row[4], "registered": inc_row[5], "maxCentreError": inc_row[6]},
                "global": {"mapSeconds": g_s, "mapCpuSeconds": g_cpu, "registered": reg,
                           "maxCentreError": err, "timeVsIncremental": g_s / inc_row[4], "notes": notes}}

        spatial = next(r for r in rows if r[0] == auto)
        ok = spatial[5] == f"{args.images}/{args.images}" and ref[2] / spatial[2] >= 2.5
        print(f"\ngoal (auto = {auto}: >= 2.5x faster matching than exhaustive, 100% registered): "
              f"{'met' if ok else 'NOT met'} ({ref[2] / spatial[2]:.2f}x, {spatial[5]})")
        results["goalMet"] = ok
    emit("sfm", smoke=args.smoke, settings={"images": args.images, "width": args.width, "height": args.height,
                                            "seed": args.seed, "global": not args.no_global}, results=results)


def _quality(models: list[pycolmap.Reconstruction], flight: Any) -> tuple[str, float]:
    if not models:
        return f"0/{len(flight.image_names)}", float("inf")
    centres = {im.name: np.asarray(im.projection_center()) for im in models[0].images.values() if im.has_pose}
    _, err = centre_error(centres, flight)
    return f"{len(centres)}/{len(flight.image_names)}", float(err)


if __name__ == "__main__":
    main()

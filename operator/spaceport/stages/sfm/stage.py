"""The SfM stage: photos in, an undistorted COLMAP model (metric ENU when GPS-tagged) out.

Output folder (the cross-stage contract): ``sparse/`` (cameras.bin, images.bin, points3D.bin of the
largest registered component, PINHOLE cameras), ``images/`` (undistorted, named as in the model) and
``georef.json`` (origin of the ENU frame) when GPS positions placed the model.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pycolmap

from spaceport.api.sfm import SfmOptions
from spaceport.contract import BadInputError, StageContext, StageError, StageOutput
from spaceport.stages.sfm import focal, georef, reconstruct
from spaceport.stages.sfm.focal import FocalOutcome
from spaceport.stages.sfm.georef import GeoFrame
from spaceport.stages.sfm.inputs import Photo, find_images, prepare_photos

MIN_IMAGES = 3

# Share of the stage's progress bar given to each step (rough CPU time shares on drone flights).
STEPS = {"prepare": (0.0, 0.1), "features": (0.1, 0.3), "matching": (0.3, 0.55), "mapping": (0.55, 0.9),
         "undistortion": (0.9, 0.95), "upload": (0.95, 1.0)}


@contextmanager
def quiet_alignment(quiet: bool) -> Iterator[None]:
    """COLMAP errors only while mapping with GPS priors: its alignment warns "No pose priors with valid
    covariance found" once per registered image, because our priors deliberately have none (see
    georef.write_priors); forty such lines were all a demo printed."""
    previous = pycolmap.logging.minloglevel
    if quiet:
        pycolmap.logging.minloglevel = max(previous, int(pycolmap.logging.ERROR))
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = previous


def run_sfm(ctx: StageContext) -> StageOutput:
    opts: SfmOptions = ctx.options
    debug = ctx.log.isEnabledFor(logging.DEBUG)
    if not debug:
        # COLMAP logs a line per image per step; our own log says what each step did.
        pycolmap.logging.minloglevel = pycolmap.logging.WARNING
    durations: dict[str, float] = {}

    @contextmanager
    def step(name: str, message: str) -> Iterator[None]:
        ctx.progress.span(*STEPS[name]).update(0.0, message, force=True)
        t0 = time.perf_counter()
        try:
            yield
        except (RuntimeError, ValueError) as e:  # pycolmap reports failures as these
            raise StageError(f"sfm {name} failed: {e}") from e
        durations[name] = round(time.perf_counter() - t0, 2)
        ctx.log.info("%s took %.1f s", name, durations[name])

    keys = find_images(ctx.input)
    if not keys:
        raise BadInputError(f"no images found under {ctx.input.uri} (looked for .jpg, .jpeg, .png, .tif, .tiff)")
    work = ctx.scratch
    prepared = work / "prepared"
    with step("prepare", f"reading {len(keys)} images"):
        bar = ctx.progress.span(*STEPS["prepare"])
        photos, failed = prepare_photos(ctx.input, keys, prepared, opts.max_image_size,
                                        lambda i, n: bar.update(i / n, f"read {i}/{n} images"))
    for key, why in failed.items():
        ctx.warn(f"skipped {ctx.input.uri_of(key)}: {why}")
    if len(photos) < MIN_IMAGES:
        unreadable = "; ".join(f"{key}: {why}" for key, why in list(failed.items())[:5])
        raise BadInputError(f"only {len(photos)} usable images under {ctx.input.uri} ({len(keys)} found, "
                            f"{len(failed)} unreadable{': ' + unreadable if failed else ''}); "
                            f"SfM needs at least {MIN_IMAGES}")
    frame = georef.geo_frame(photos, ctx.warn)
    mode = reconstruct.choose_matching(opts, photos, frame)
    if mode == "spatial" and frame is None:
        raise BadInputError("sfm.matching: spatial matching needs GPS tags in the images; use auto or sequential")
    database = work / "database.db"

    with step("features", f"SIFT features of {len(photos)} images"):
        n_cameras = reconstruct.extract(database, prepared, photos, opts)
        if frame is not None:
            georef.write_priors(database, frame)
    with step("matching", f"{mode} matching"):
        reconstruct.match(database, mode, opts)

    with step("mapping", f"{opts.mapper} mapping"), quiet_alignment(frame is not None and not debug):
        best, mapper, n_others, focal_outcome = _map(ctx, database, prepared, work / "models", photos, frame)
    n_reg = best.num_reg_images()
    unregistered = sorted({p.name for p in photos} - {im.name for im in best.images.values() if im.has_pose})
    if unregistered:
        shown = ", ".join(unregistered[:10]) + (f" and {len(unregistered) - 10} more" if len(unregistered) > 10 else "")
        ctx.warn(f"{len(unregistered)} of {len(photos)} images did not register: {shown}")
    metrics = {
        "imagesFound": len(keys),
        "imagesUsed": len(photos),
        "registeredImages": n_reg,
        "registeredFraction": round(n_reg / len(photos), 4),
        "meanReprojectionError": round(float(best.compute_mean_reprojection_error()), 4),
        "points3D": int(best.num_points3D()),
        "meanTrackLength": round(float(best.compute_mean_track_length()), 3),
        "matchingMode": mode,
        "mapper": mapper,
        "cameras": n_cameras,
        "focalLength": focal_outcome.mode,
        "focalLengthReason": focal_outcome.reason,
        "components": n_others + 1,
        "gpsImages": sum(p.gps is not None for p in photos),
        "georeference": frame.georef() if frame is not None else None,
    }
    if frame is not None:
        metrics.update(_gps_metrics(ctx, best, frame))
    chosen = work / "chosen"
    chosen.mkdir()
    best.write_binary(str(chosen))
    undistorted = work / "undistorted"
    with step("undistortion", "undistorting images"):
        pycolmap.undistort_images(undistorted, chosen, prepared, output_type="COLMAP", jpeg_quality=95)
    shutil.rmtree(prepared)  # the scratch disk holds one copy of the photos at a time
    with step("upload", "writing the model"):
        outputs = _upload(ctx, undistorted, frame)
    metrics["durationsSeconds"] = durations
    return StageOutput(metrics=metrics, outputs=outputs)


def _map(ctx: StageContext, database: Path, images: Path, out: Path, photos: list[Photo],
         frame: GeoFrame | None) -> tuple[pycolmap.Reconstruction, str, int, FocalOutcome]:
    """The largest model, the mapper that made it, how many other components there were, and what became of
    the focal length. Raises BadInputError when too few photos register.

    Tries, in order, until one is good (see focal.py and reconstruct.unusable): the focal length held at EXIF
    where that is the rule; the chosen mapper refining it; the other mapper. Keeps the best of those tried.
    """
    opts: SfmOptions = ctx.options
    all_priors = all(p.focal_px is not None for p in photos)
    hold = all_priors and (opts.focal_length == "exif" or (opts.focal_length == "auto" and frame is not None))
    other = "global" if opts.mapper == "incremental" else "incremental"
    plan = [("held", opts.mapper, True)] if hold else []
    plan += [("refined", opts.mapper, False), ("refined", other, False)]
    tried: list[tuple[list[pycolmap.Reconstruction], str, FocalOutcome]] = []
    for i, (label, mapper, keep) in enumerate(plan):
        models = reconstruct.map_images(database, images, out / f"{i}", mapper, frame,
                                        _registration_progress(ctx, len(photos)), keep_focal=keep)
        if keep and opts.focal_length == "auto" and frame is not None:
            problem = focal.held_problem(models, len(photos), frame)
        else:
            problem = reconstruct.unusable(models, frame, len(photos), focal.HELD_MIN_REGISTERED)
        outcome = FocalOutcome("exif", f"sfm.focalLength: {opts.focal_length}") if keep else FocalOutcome(
            "refined" if any(p.focal_px for p in photos) else "estimated", _why_refined(opts, all_priors, hold))
        tried.append((models, mapper, outcome))
        if problem is None:
            break
        if i + 1 < len(plan):
            ctx.log.info("%s %s mapping %s; trying %s %s mapping", label, mapper, problem, *plan[i + 1][:2])
    models, mapper, outcome = max(tried, key=lambda t: t[0][0].num_reg_images() if t[0] else 0)
    n_reg = models[0].num_reg_images() if models else 0
    if n_reg < max(MIN_IMAGES, opts.min_registered_fraction * len(photos)):
        raise BadInputError(
            f"only {n_reg} of {len(photos)} usable images registered ({100 * n_reg / len(photos):.0f}%; "
            f"sfm.minRegisteredFraction is {opts.min_registered_fraction:g}): the photos overlap too little "
            f"or show too little texture")
    others = reconstruct.components_beyond(models)
    if others:
        ctx.warn(f"{len(others) + 1} disconnected components: kept the largest ({n_reg} images), "
                 f"dropped {', '.join(str(n) for n in others)} image(s)")
    ctx.log.info("focal length: %s (%s)", outcome.mode, outcome.reason)
    if outcome.mode != "exif":
        for note in focal.focal_drift(models[0], {p.name: p.focal_px for p in photos}):
            ctx.warn(f"{note}: the EXIF value is rough, or the photos do not pin it down")
    return models[0], mapper, len(others), outcome


def _why_refined(opts: SfmOptions, all_priors: bool, held_first: bool) -> str:
    if held_first:
        return "held at EXIF, the model was not a registered nadir survey that agrees with GPS"
    if not all_priors:
        return "no EXIF focal length for some photos"
    return "no GPS to tell a nadir flight" if opts.focal_length == "auto" else "sfm.focalLength: refine"


def _registration_progress(ctx: StageContext, n_photos: int) -> Callable[[], None]:
    """A callback for one mapping attempt: counts its registrations (a new attempt starts again from 0)."""
    registered = 0

    def on_registered() -> None:
        nonlocal registered
        registered += 1
        ctx.progress.span(*STEPS["mapping"]).update(min(registered / n_photos, 1.0),
                                                    f"registered {registered}/{n_photos} images")
    return on_registered


def _gps_metrics(ctx: StageContext, rec: pycolmap.Reconstruction, frame: GeoFrame) -> dict[str, Any]:
    """How the model sits against its GPS tags; warns with the numbers and the likely cause when badly."""
    fit = georef.agreement(rec, frame)
    if fit is None:
        return {}
    if fit.outliers:
        shown = ", ".join(fit.outliers[:5]) + (f" and {len(fit.outliers) - 5} more" if len(fit.outliers) > 5 else "")
        ctx.warn(f"{len(fit.outliers)} GPS tag(s) lie more than {georef.OUTLIER_SIGMAS:g} standard deviations from "
                 f"where the photos place their camera: {shown}")
    if not fit.explained:
        ctx.warn(f"camera positions disagree with their GPS tags by {fit.median:.1f} m (median; the tags' stated "
                 f"or assumed accuracy allows about {fit.expected:.1f} m): check the tags, or the photos' overlap")
    return {"gpsResidualMeters": round(fit.median, 3), "gpsResidualHorizontalMeters": round(fit.horizontal_median, 3),
            "gpsResidualVerticalMeters": round(fit.vertical_median, 3), "gpsOutliers": len(fit.outliers)}


def _upload(ctx: StageContext, undistorted: Path, frame: GeoFrame | None) -> dict[str, str]:
    bar = ctx.progress.span(*STEPS["upload"])
    ctx.output.upload_dir(undistorted / "images", "images", lambda d, t: bar.update(0.9 * d / max(t, 1)))
    # Model last among the big parts: a reader that finds sparse/ finds every image it names.
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        ctx.output.upload_file(undistorted / "sparse" / name, f"sparse/{name}")
    outputs = {"sparse": ctx.output.uri_of("sparse"), "images": ctx.output.uri_of("images")}
    if frame is not None:
        ctx.output.write_text("georef.json", json.dumps(frame.georef(), indent=1))
        outputs["georef"] = ctx.output.uri_of("georef.json")
    return outputs

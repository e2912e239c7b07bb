"""The SfM stage: photos in, an undistorted COLMAP model (metric ENU when GPS-tagged) out.

Output folder (the cross-stage contract): ``sparse/`` (cameras.bin, images.bin, points3D.bin of the
largest registered component, PINHOLE cameras), ``images/`` (undistorted, named as in the model) and
``georef.json`` (origin of the ENU frame) when GPS positions placed the model.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pycolmap

from spaceport.api.sfm import SfmOptions
from spaceport.api.stages import SFM
from spaceport.contract import BadInputError, StageContext, StageError, StageOutput
from spaceport.stages.sfm import focal, georef, reconstruct
from spaceport.stages.sfm.focal import FocalOutcome
from spaceport.stages.sfm.georef import GeoFrame
from spaceport.stages.sfm.inputs import Photo, find_images, prepare_photos

MIN_IMAGES = 3
FALLBACK_REGISTERED = 0.9
"""A model that registers less than this share of the photos (or disagrees with GPS) makes the other mapper try."""

# Share of the stage's progress bar given to each step (rough CPU time shares on drone flights).
STEPS = {"prepare": (0.0, 0.1), "features": (0.1, 0.3), "matching": (0.3, 0.55), "mapping": (0.55, 0.9),
         "undistortion": (0.9, 0.95), "upload": (0.95, 1.0)}


@contextmanager
def quiet_alignment(quiet: bool) -> Iterator[None]:
    """COLMAP errors only while mapping with GPS priors: its prior alignment logs a warning per registered
    image (forty such lines were all a demo once printed); our own log says what mapping did."""
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
        counted = reconstruct.counts(database)

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
        **counted,
        "featuresPerImage": reconstruct.features_per_image(opts, len(photos)),
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
        outputs = _upload(ctx, undistorted, frame, sorted(p.name for p in photos))
    metrics["peakRssBytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB, threads included
    metrics["durations"] = durations
    return StageOutput(metrics=SFM.metrics.model_validate(metrics), outputs=outputs)


def _map(ctx: StageContext, database: Path, images: Path, out: Path, photos: list[Photo],
         frame: GeoFrame | None) -> tuple[pycolmap.Reconstruction, str, int, FocalOutcome]:
    """The largest model, the mapper that made it, how many other components there were, and what became of
    the focal length. Raises BadInputError when too few photos register.

    The chosen mapper maps refining the focal length (or holding it, with ``focalLength: exif``); when its model
    registers under 90% of the photos or disagrees with GPS (its median, or a quarter of the tags), the other mapper
    tries, and its model is kept if it passes those checks or registers more photos. Then, in ``auto``, a flat scene
    seen from above is mapped again with the EXIF focal length held, and GPS decides between the two (focal.py says
    why)."""
    opts: SfmOptions = ctx.options
    all_priors = all(p.focal_px is not None for p in photos)
    keep = opts.focal_length == "exif" and all_priors
    count = 0

    def attempt(mapper: str, hold: bool) -> list[pycolmap.Reconstruction]:
        nonlocal count
        count += 1
        label = f"{mapper} mapping" + (" (EXIF focal length held)" if hold else "")
        return reconstruct.map_images(database, images, out / str(count), mapper, frame,
                                      _registration_progress(ctx, len(photos), label), keep_focal=hold)

    mapper = opts.mapper
    models = attempt(mapper, keep)
    problem = reconstruct.unusable(models, frame, len(photos), FALLBACK_REGISTERED)
    if problem is not None:
        other = "global" if mapper == "incremental" else "incremental"
        ctx.log.info("%s mapping %s; trying %s mapping", mapper, problem, other)
        second = attempt(other, False)
        usable = reconstruct.unusable(second, frame, len(photos), FALLBACK_REGISTERED) is None
        if second and (not models or usable or second[0].num_reg_images() > models[0].num_reg_images()):
            models, mapper, keep = second, other, False
    outcome = _focal_outcome(opts, keep, all_priors, frame)
    if models and opts.focal_length == "auto" and all_priors and frame is not None:
        scene_relief = focal.relief(models[0])
        if scene_relief < focal.FLAT_MAX_RELIEF:
            held = attempt(mapper, True)
            better, why = focal.held_is_better(held, models[0], frame)
            outcome = FocalOutcome("exif" if better else "refined", f"relief {scene_relief:.3f} of the height: {why}")
            models = held if better else models
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


def _focal_outcome(opts: SfmOptions, kept: bool, all_priors: bool, frame: GeoFrame | None) -> FocalOutcome:
    """What became of the focal length before the flat-scene check."""
    if kept:
        return FocalOutcome("exif", "sfm.focalLength: exif")
    if not all_priors:
        return FocalOutcome("estimated", "some photos carry no EXIF focal length")
    if opts.focal_length != "auto":
        return FocalOutcome("refined", f"sfm.focalLength: {opts.focal_length}")
    return FocalOutcome("refined", "the scene has relief enough to fix it" if frame is not None else
                        "no GPS tags to choose by on flat ground")


def _registration_progress(ctx: StageContext, n_photos: int, label: str) -> Callable[[int], None]:
    """Progress of one mapping attempt, which counts its own registrations (never more than the photos)."""
    bar = ctx.progress.span(*STEPS["mapping"])
    bar.update(0.0, label, force=True)

    def on_progress(registered: int) -> None:
        bar.update(min(registered / n_photos, 1.0), f"{label}: registered {registered}/{n_photos} images")
    return on_progress


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


def _upload(ctx: StageContext, undistorted: Path, frame: GeoFrame | None, photos: list[str]) -> dict[str, str]:
    bar = ctx.progress.span(*STEPS["upload"])
    files = SFM.files  # COLMAP's undistorter names its folders as our contract does: images/, sparse/
    ctx.output.upload_dir(undistorted / "images", files.images, lambda d, t: bar.update(0.9 * d / max(t, 1)))
    ctx.output.write_text(files.photos, json.dumps(photos, indent=0))
    # Model last among the big parts: a reader that finds sparse/ finds every image it names.
    for name in files.model:
        ctx.output.upload_file(undistorted / "sparse" / name, f"{files.sparse}/{name}")
    outputs = {"sparse": ctx.output.uri_of(files.sparse), "images": ctx.output.uri_of(files.images)}
    if frame is not None:
        ctx.output.write_text(files.georef, json.dumps(frame.georef(), indent=1))
        outputs["georef"] = ctx.output.uri_of(files.georef)
    return outputs

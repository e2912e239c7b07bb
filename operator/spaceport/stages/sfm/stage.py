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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pycolmap

from spaceport.api.sfm import SfmOptions
from spaceport.contract import BadInputError, StageContext, StageError, StageOutput
from spaceport.stages.sfm import reconstruct
from spaceport.stages.sfm.inputs import find_images, prepare_photos

MIN_IMAGES = 3

# Share of the stage's progress bar given to each step (rough CPU time shares on drone flights).
STEPS = {"prepare": (0.0, 0.1), "features": (0.1, 0.3), "matching": (0.3, 0.55), "mapping": (0.55, 0.9),
         "undistortion": (0.9, 0.95), "upload": (0.95, 1.0)}


@contextmanager
def quiet_alignment(quiet: bool) -> Iterator[None]:
    """COLMAP errors only while mapping with GPS priors: its alignment warns "No pose priors with valid
    covariance found" once per registered image, because our priors deliberately have none (see
    reconstruct.write_priors); forty such lines were all a demo printed."""
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
    frame = reconstruct.geo_frame(photos, ctx.warn)
    mode = reconstruct.choose_matching(opts, photos, frame)
    if mode == "spatial" and frame is None:
        raise BadInputError("sfm.matching: spatial matching needs GPS tags in the images; use auto or sequential")
    database = work / "database.db"

    with step("features", f"SIFT features of {len(photos)} images"):
        n_cameras = reconstruct.extract(database, prepared, photos, opts)
        if frame is not None:
            reconstruct.write_priors(database, frame)
    with step("matching", f"{mode} matching"):
        reconstruct.match(database, mode, opts)

    registered = 0

    def on_registered() -> None:
        nonlocal registered
        registered += 1
        ctx.progress.span(*STEPS["mapping"]).update(min(registered / len(photos), 1.0),
                                                    f"registered {registered}/{len(photos)} images")

    exif_focal = not opts.refine_focal_length and all(p.focal_px is not None for p in photos)
    with step("mapping", f"{opts.mapper} mapping"), quiet_alignment(frame is not None and not debug):
        models, mapper = reconstruct.map_images(database, prepared, work / "models", opts, frame, on_registered,
                                                ctx.warn, exif_focal)
    n_reg = models[0].num_reg_images() if models else 0
    if n_reg < max(MIN_IMAGES, opts.min_registered_fraction * len(photos)):
        raise BadInputError(
            f"only {n_reg} of {len(photos)} usable images registered ({100 * n_reg / len(photos):.0f}%; "
            f"sfm.minRegisteredFraction is {opts.min_registered_fraction:g}): the photos overlap too little "
            f"or show too little texture")
    best = models[0]
    others = reconstruct.components_beyond(models)
    if others:
        ctx.warn(f"{len(others) + 1} disconnected components: kept the largest ({n_reg} images), "
                 f"dropped {', '.join(str(n) for n in others)} image(s)")
    if not exif_focal:
        hint = ("sfm.refineFocalLength false keeps the EXIF value" if opts.refine_focal_length else
                "it was estimated because some photos carry no EXIF focal length")
        for note in reconstruct.focal_drift(best, {p.name: p.focal_px for p in photos}):
            ctx.warn(f"{note}: {hint}")
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
        "focalLength": "exif" if exif_focal else "estimated",
        "components": len(others) + 1,
        "gpsImages": sum(p.gps is not None for p in photos),
        "georeference": frame.georef() if frame is not None else None,
    }
    if frame is not None:
        residual, spread = reconstruct.gps_residual(best, frame)
        metrics["gpsResidualMeters"] = round(residual, 3)
        if residual > reconstruct.MAX_GPS_RESIDUAL * spread:
            ctx.warn(f"camera positions disagree with their GPS tags by {residual:.1f} m (median): check the tags")

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


def _upload(ctx: StageContext, undistorted: Path, frame: reconstruct.GeoFrame | None) -> dict[str, str]:
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

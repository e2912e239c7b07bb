"""pycolmap steps: features, matching and mapping. Pure functions over a scratch folder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pycolmap

from spaceport.api.sfm import SfmOptions
from spaceport.stages.cpus import usable_cpus
from spaceport.stages.sfm.georef import OUTLIER_SIGMAS, GeoFrame, agreement, align_to_gps
from spaceport.stages.sfm.inputs import Photo, is_ordered

log = logging.getLogger("spaceport.stages.sfm")

POSITIONING_TRACKS_PER_VIEW = 200
"""Tracks per photo the global mapper positions the cameras with (all tracks are triangulated afterwards)."""

MIN_FEATURES_PER_IMAGE = 1024
"""The feature budget never leaves an image fewer features than this: matching needs them more than memory."""


def features_per_image(opts: SfmOptions, n_images: int) -> int:
    """The SIFT keypoint cap of each image: ``sfm.maxFeatures``, lower where the set is so large that all of them
    together would pass ``sfm.featureBudget`` (never under MIN_FEATURES_PER_IMAGE). Both mappers hold every image's
    features and their correspondences in memory: measured on generated flights, ~650 bytes a feature (global
    mapper, 233 and 1,000 photos, 380-770 features each), so the mapping step's memory grows with the images times
    this cap. COLMAP gives a keypoint up to two orientations: an image can hold up to twice the cap in features."""
    share = opts.feature_budget // max(n_images, 1)
    return min(opts.max_features, max(share, MIN_FEATURES_PER_IMAGE))


def extract(database: Path, images: Path, photos: list[Photo], opts: SfmOptions) -> int:
    """SIFT on every photo, one COLMAP camera per group of photos that share intrinsics. Returns the cameras."""
    groups: dict[tuple, list[Photo]] = {}
    for p in photos:
        groups.setdefault(p.camera_key, []).append(p)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = usable_cpus()
    extraction.max_image_size = opts.max_image_size
    extraction.sift.max_num_features = features_per_image(opts, len(photos))
    for members in groups.values():
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = opts.camera_model
        f = members[0].focal_px
        if f is not None:
            # The EXIF value is where bundle adjustment starts (or the value itself with keep_focal).
            cam = pycolmap.Camera.create_from_model_name(1, opts.camera_model, f, members[0].width,
                                                         members[0].height)
            reader.camera_params = ",".join(f"{v:.6f}" for v in cam.params)
        pycolmap.extract_features(database, images, image_names=[p.name for p in members],
                                  camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  extraction_options=extraction, device=pycolmap.Device.cpu)
    _flag_focal_priors(database, False)
    return len(groups)


def _flag_focal_priors(database: Path, trusted: bool) -> None:
    """Whether COLMAP may trust the cameras' EXIF focal lengths. Trusted, it verifies matches with them
    (essential against fundamental matrix) and starts from them; a phone's EXIF value 30% off then left 2 of
    29 photos registered. Untrusted, the value is only where bundle adjustment starts (measured on generated
    flights: the refined value came out 2.4% off EXIF instead of 36%), and matches are verified without it.
    Held focal lengths must be trusted, or COLMAP estimates them anyway as it registers each camera."""
    db = pycolmap.Database.open(database)
    try:
        for camera in db.read_all_cameras():
            camera.has_prior_focal_length = trusted
            db.update_camera(camera)
    finally:
        db.close()


def choose_matching(opts: SfmOptions, photos: list[Photo], frame: GeoFrame | None) -> str:
    if opts.matching != "auto":
        return opts.matching
    if frame is not None and len(frame.positions) == len(photos):
        return "spatial"
    if len(photos) <= opts.exhaustive_max_images:
        return "exhaustive"
    return "sequential" if is_ordered(photos) else "exhaustive"


def match(database: Path, mode: str, opts: SfmOptions) -> None:
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = usable_cpus()
    if mode == "spatial":
        pairing = pycolmap.SpatialPairingOptions()
        pairing.max_num_neighbors = opts.spatial_neighbors
        pairing.max_distance = 1e9  # neighbours by count, whatever the flight's scale
        pairing.ignore_z = False
        pycolmap.match_spatial(database, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
    elif mode == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = opts.sequential_overlap
        pairing.quadratic_overlap = True
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                  device=pycolmap.Device.cpu)
    elif mode == "exhaustive":
        pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    else:
        raise ValueError(f"unknown matching mode {mode!r}")


def counts(database: Path) -> dict[str, float]:
    """What the database holds: features per image (mean), image pairs matched and pairs verified."""
    db = pycolmap.Database.open(database)
    try:
        return {"meanFeatures": round(db.num_keypoints() / max(db.num_images(), 1), 1),
                "imagePairs": int(db.num_matched_image_pairs()), "verifiedPairs": int(db.num_verified_image_pairs())}
    finally:
        db.close()


def map_images(database: Path, images: Path, out: Path, mapper: str, frame: GeoFrame | None,
               on_progress: Callable[[int], None] | None = None,
               keep_focal: bool = False) -> list[pycolmap.Reconstruction]:
    """Every model ``mapper`` ("incremental" or "global") found, largest first (by registered images).

    Focal lengths start from EXIF and are refined unless ``keep_focal``. GPS tags weigh in the incremental
    mapper's bundle adjustment by their accuracy, with a robust loss (see georef.py); the global mapper's
    model is moved onto them by a similarity afterwards. ``on_progress`` gets the number of images registered
    so far: after each one (incremental), or once at the end (global, which registers all at once).
    """
    _flag_focal_priors(database, keep_focal)
    report = on_progress or (lambda n: None)
    if mapper == "global":
        models = _map_globally(database, images, out / "global", frame, keep_focal)
        report(models[0].num_reg_images() if models else 0)
        return models
    inc = incremental_options(frame is not None, keep_focal)
    (out / "incremental").mkdir(parents=True, exist_ok=True)
    registered = 0

    def next_image() -> None:
        nonlocal registered
        registered += 1
        report(registered)

    return _sorted(pycolmap.incremental_mapping(database, images, out / "incremental", inc,
                                                next_image_callback=next_image))


def unusable(models: list[pycolmap.Reconstruction], frame: GeoFrame | None, n_images: int,
             min_fraction: float) -> str | None:
    """Why a mapping result is not good enough to keep without trying another way; None when it is."""
    if not models:
        return "found no model"
    if models[0].num_reg_images() < min_fraction * n_images:
        return f"registered only {models[0].num_reg_images()} of {n_images} images"
    fit = agreement(models[0], frame) if frame is not None else None
    if fit is not None and not fit.explained:
        return f"disagrees with GPS by {fit.median:.1f} m (median; the tags' accuracy allows {fit.expected:.1f} m)"
    if fit is not None and fit.bent:
        return (f"places {len(fit.outliers)} of {fit.tagged} cameras beyond {OUTLIER_SIGMAS:g} standard deviations of "
                f"their GPS tags")
    return None


def incremental_options(georeferenced: bool, keep_focal: bool) -> pycolmap.IncrementalPipelineOptions:
    inc = pycolmap.IncrementalPipelineOptions()
    inc.num_threads = usable_cpus()
    inc.random_seed = 0
    inc.min_model_size = 3
    inc.use_prior_position = georeferenced
    inc.use_robust_loss_on_prior_position = True
    inc.ba_refine_focal_length = not keep_focal
    inc.mapper.abs_pose_refine_focal_length = not keep_focal
    return inc


def _map_globally(database: Path, images: Path, out: Path, frame: GeoFrame | None,
                  keep_focal: bool) -> list[pycolmap.Reconstruction]:
    out.mkdir(parents=True, exist_ok=True)
    glo = _global_options()
    if keep_focal:
        glo.mapper.bundle_adjustment.refine_focal_length = False
        glo.mapper.bundle_adjustment.refine_extra_params = False
    models = _sorted(pycolmap.global_mapping(database, images, out, glo))
    if models and keep_focal:
        final = pycolmap.BundleAdjustmentOptions()
        final.refine_focal_length = False
        pycolmap.bundle_adjustment(models[0], final)
    if models and frame is not None:
        align_to_gps(models[0], frame)
    return models


def _sorted(models: dict[int, pycolmap.Reconstruction]) -> list[pycolmap.Reconstruction]:
    return sorted(models.values(), key=lambda r: r.num_reg_images(), reverse=True)


def _global_options() -> pycolmap.GlobalPipelineOptions:
    glo = pycolmap.GlobalPipelineOptions()
    glo.num_threads = usable_cpus()
    glo.random_seed = 0
    glo.min_model_size = 3
    # Position the cameras (global positioning, bundle adjustment) from the longest tracks, enough of them
    # that every photo has POSITIONING_TRACKS_PER_VIEW, instead of from all; retriangulation then adds every
    # other track. Measured on seneca/ (167 photos): mapping CPU time 201 -> 81 s, the same 166 photos
    # registered, 62,211 points against 62,216, the same focal length and GPS agreement (1.91 m median).
    glo.mapper.track_required_tracks_per_view = POSITIONING_TRACKS_PER_VIEW
    return glo


def components_beyond(models: list[pycolmap.Reconstruction]) -> list[int]:
    """Sizes of the models after the first, counting only images the first did not register."""
    if not models:
        return []
    seen = {im.name for im in models[0].images.values() if im.has_pose}
    sizes = []
    for rec in models[1:]:
        names = {im.name for im in rec.images.values() if im.has_pose} - seen
        if names:
            sizes.append(len(names))
            seen |= names
    return sizes

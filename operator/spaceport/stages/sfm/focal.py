"""Focal length: the EXIF value as a prior, held fixed only where that is known to help.

Seen straight down over flat ground, a longer focal length and a higher flight explain the photos equally
well, so a refined focal length drifts with the depth (measured on generated flights with exact EXIF: the
incremental mapper's went 14% short without GPS and 36% long with GPS weighed in, the global mapper's 3.7x
long; held at EXIF, camera centres came out within 0.12 m of their tags). Elsewhere the photos pin the focal
length down, and a wrong EXIF value held fixed breaks registration (a phone's 35 mm equivalent can be far
off: 2 of 29 photos registered). So in ``auto`` the stage maps with the EXIF value held only when every
photo has one and GPS tells down from up, keeps that model only when it shows a near-nadir view of flat
ground, registers the photos and agrees with GPS, and otherwise maps again refining the focal length.
The rule follows from the scene's geometry, not from a camera list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycolmap

from spaceport.stages.sfm.georef import GeoFrame, agreement

FOCAL_DRIFT_WARN = 0.05
"""An estimated focal length further than this share from its EXIF value is reported."""
NADIR_MIN_COS = float(np.cos(np.radians(35)))
"""Near-nadir: the median camera looks within 35 degrees of straight down (survey cameras lean forward)."""
FLAT_MAX_RELIEF = 0.15
"""Flat: the ground's relief (10th to 90th percentile of point heights) is below this share of the cameras'
median height above it, so the depth varies too little within a photo to fix the focal length."""
HELD_MIN_REGISTERED = 0.9
"""A model mapped with the focal length held is kept only when it registered this share of the photos."""


@dataclass(frozen=True)
class FocalOutcome:
    mode: str  # "exif" (held at EXIF), "refined" (from EXIF), "estimated" (no EXIF prior), "mixed"
    reason: str


def camera_priors(rec: pycolmap.Reconstruction, prior_px: dict[str, float | None]) -> dict[int, float]:
    """EXIF focal length (px) per camera of the model, for cameras whose registered images all have one."""
    priors: dict[int, float] = {}
    for camera_id in rec.cameras:
        values = [prior_px.get(im.name) for im in rec.images.values() if im.camera_id == camera_id and im.has_pose]
        if values and all(v is not None for v in values):
            priors[camera_id] = float(values[0])  # type: ignore[arg-type]
    return priors


def scene_geometry(rec: pycolmap.Reconstruction) -> tuple[float, float]:
    """(median cosine between the view direction and straight down, ground relief / camera height); the model
    must be in an ENU (z-up) frame."""
    views, heights = [], []
    for im in rec.images.values():
        if im.has_pose:
            rotation = im.cam_from_world().rotation.matrix()
            views.append(-float(rotation[2, 2]))  # world z of the camera's optical axis, negated: down is +1
            heights.append(float(np.asarray(im.projection_center())[2]))
    z = np.array([p.xyz[2] for p in rec.points3D.values()])
    if not views or z.size < 10:
        return 0.0, float("inf")
    ground = float(np.median(z))
    height = float(np.median(heights)) - ground
    relief = float(np.percentile(z, 90) - np.percentile(z, 10))
    return float(np.median(views)), (relief / height if height > 0 else float("inf"))


def focal_drift(rec: pycolmap.Reconstruction, exif_focal: dict[str, float | None]) -> list[str]:
    """A line for each camera whose estimated focal length ended more than FOCAL_DRIFT_WARN from its EXIF
    value (``exif_focal``: pixels by image name)."""
    notes = []
    for camera_id, camera in sorted(rec.cameras.items()):
        names = sorted(im.name for im in rec.images.values() if im.camera_id == camera_id and im.has_pose)
        prior = next((f for f in (exif_focal.get(n) for n in names) if f), None)
        if prior is None:
            continue
        change = camera.mean_focal_length() / prior - 1.0
        if abs(change) > FOCAL_DRIFT_WARN:
            notes.append(f"the focal length of {names[0]}'s camera ({len(names)} images) came out "
                         f"{camera.mean_focal_length():.0f} px, {change:+.0%} off its EXIF value {prior:.0f} px")
    return notes


def held_problem(models: list[pycolmap.Reconstruction], n_photos: int, frame: GeoFrame) -> str | None:
    """Why a model mapped with EXIF focal lengths held fixed should not be kept; None when it should."""
    if not models or models[0].num_reg_images() < HELD_MIN_REGISTERED * n_photos:
        n = models[0].num_reg_images() if models else 0
        return f"only {n} of {n_photos} photos registered with it held"
    down, relief = scene_geometry(models[0])
    if down < NADIR_MIN_COS or relief > FLAT_MAX_RELIEF:
        tilt = np.degrees(np.arccos(np.clip(down, -1, 1)))
        return f"not a near-nadir view of flat ground (cameras {tilt:.0f} degrees off vertical, relief {relief:.2f} " \
               "of their height)"
    fit = agreement(models[0], frame)
    if fit is not None and not fit.explained:
        return f"held, the model disagrees with GPS by {fit.median:.1f} m (the tags allow {fit.expected:.1f} m)"
    return None

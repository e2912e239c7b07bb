"""GPS tags as what they are: metres-accurate positions that place a model in a local east-north-up frame.

The tags become COLMAP pose priors with a covariance from each tag's stated (or assumed) accuracy, so bundle
adjustment weighs them against the photos (with a robust loss, so a few wrong tags cannot bend the model),
and the model comes out at metric scale in the frame whose WGS84 origin ``georef.json`` records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap

from spaceport.stages.sfm.inputs import Photo

log = logging.getLogger("spaceport.stages.sfm")

MIN_GPS_SPREAD_M = 2.0
"""GPS positions spread over less than this (a tripod, a hover) cannot fix the scale: they are ignored."""
OUTLIER_SIGMAS = 3.0
"""A camera further than this many of its tag's standard deviations from the tag is reported as an outlier."""
BENT_OUTLIER_SHARE = 0.25
"""More outliers than this share of the tagged photos (and more than two) is not a receiver's glitch on a few tags
but a model the photos bent or broke: a correct model leaves ~1% of honest tags beyond 3 sigma."""


@dataclass(frozen=True)
class GeoFrame:
    """A local east-north-up frame in metres, and each tagged photo's position and accuracy in it."""

    latitude: float
    longitude: float
    altitude: float
    positions: dict[str, np.ndarray] = field(default_factory=dict)
    sigmas: dict[str, tuple[float, float]] = field(default_factory=dict)  # horizontal, vertical (m, 1 sigma)

    def georef(self) -> dict:
        return {"latitude": self.latitude, "longitude": self.longitude, "altitude": self.altitude, "frame": "ENU"}


def geo_frame(photos: list[Photo], warn: Callable[[str], None]) -> GeoFrame | None:
    """The ENU frame centred on the photos' mean GPS position; None when GPS cannot place the model."""
    tagged = [p for p in photos if p.gps is not None]
    if len(tagged) < 3:
        return None
    if len(tagged) < len(photos) / 2:
        warn(f"only {len(tagged)} of {len(photos)} images carry GPS tags: the model is not georeferenced")
        return None
    lla = np.array([p.gps.lla for p in tagged if p.gps is not None], dtype=np.float64)
    origin = lla.mean(axis=0)
    enu = pycolmap.GPSTransform().ellipsoid_to_enu(lla, float(origin[0]), float(origin[1]), float(origin[2]))
    if np.ptp(enu[:, :2], axis=0).max() < MIN_GPS_SPREAD_M:
        warn(f"GPS positions span less than {MIN_GPS_SPREAD_M} m: the model is not georeferenced")
        return None
    positions = {p.name: e for p, e in zip(tagged, enu, strict=True)}
    sigmas = {p.name: (p.gps.sigma_horizontal, p.gps.sigma_vertical) for p in tagged if p.gps is not None}
    return GeoFrame(float(origin[0]), float(origin[1]), float(origin[2]), positions, sigmas)


def write_priors(database: Path, frame: GeoFrame) -> None:
    """Replace whatever priors COLMAP read from EXIF with positions in our ENU frame and their covariance."""
    db = pycolmap.Database.open(database)
    try:
        db.clear_pose_priors()
        for image in db.read_all_images():
            pos = frame.positions.get(image.name)
            if pos is not None:
                h, v = frame.sigmas[image.name]
                db.write_pose_prior(pycolmap.PosePrior(
                    corr_data_id=image.data_id, position=np.asarray(pos, np.float64),
                    position_covariance=np.diag([h * h, h * h, v * v]),
                    coordinate_system=pycolmap.PosePriorCoordinateSystem.CARTESIAN))
    finally:
        db.close()


@dataclass(frozen=True)
class GpsAgreement:
    """How registered camera centres sit against their GPS tags, in the ENU frame."""

    median: float  # metres, 3D
    horizontal_median: float
    vertical_median: float
    outliers: tuple[str, ...]  # images further than OUTLIER_SIGMAS of their tag's accuracy
    expected: float  # median 3D distance the tags' own accuracy would give
    tagged: int  # registered images with a tag

    @property
    def explained(self) -> bool:
        """Whether the disagreement is no larger than the tags' accuracy allows (after leaving out outliers)."""
        return self.median <= max(2.0 * self.expected, 0.5)

    @property
    def bent(self) -> bool:
        """Whether so many tags disagree that the model, not the tags, is the likelier cause."""
        return len(self.outliers) > max(2, BENT_OUTLIER_SHARE * self.tagged)


def agreement(rec: pycolmap.Reconstruction, frame: GeoFrame) -> GpsAgreement | None:
    names, est, gps = [], [], []
    for im in rec.images.values():
        if im.has_pose and im.name in frame.positions:
            names.append(im.name)
            est.append(np.asarray(im.projection_center()))
            gps.append(frame.positions[im.name])
    if not names:
        return None
    d = np.array(est) - np.array(gps)
    sig = np.array([frame.sigmas[n] for n in names])
    normalised = np.sqrt((d[:, 0] ** 2 + d[:, 1] ** 2) / sig[:, 0] ** 2 / 2 + d[:, 2] ** 2 / sig[:, 1] ** 2)
    outliers = tuple(n for n, z in zip(names, normalised, strict=True) if z > OUTLIER_SIGMAS)
    # A 3D Gaussian with these sigmas has a median distance of about 1.54 sigma (isotropic case).
    expected = float(np.median(np.sqrt(2 * sig[:, 0] ** 2 + sig[:, 1] ** 2)) * 0.89)
    return GpsAgreement(float(np.median(np.linalg.norm(d, axis=1))), float(np.median(np.linalg.norm(d[:, :2], axis=1))),
                        float(np.median(np.abs(d[:, 2]))), outliers, expected, len(names))


def align_to_gps(rec: pycolmap.Reconstruction, frame: GeoFrame) -> None:
    """Move a model into the ENU frame with the similarity that best fits camera centres to GPS: RANSAC, then
    a robust (Cauchy) least-squares refinement, so that the bulk of the tags, not their heavy tail, places the
    model (measured on a real survey: median horizontal disagreement 2.3 -> 1.9 m, the same camera centres)."""
    names, targets = [], []
    for image in rec.images.values():
        if image.has_pose and image.name in frame.positions:
            names.append(image.name)
            targets.append(frame.positions[image.name])
    if len(names) < 3:
        return
    ransac = pycolmap.RANSACOptions()
    ransac.max_error = 3.0 * float(np.median([frame.sigmas[n][0] for n in names]))
    ransac.random_seed = 0
    sim = pycolmap.align_reconstruction_to_locations(rec, names, np.array(targets), 3, ransac)
    if sim is None:
        log.warning("could not align the model to the GPS positions")
        return
    rec.transform(sim)
    centres = np.array([np.asarray(rec.find_image_with_name(n).projection_center()) for n in names])
    rec.transform(pycolmap.Sim3d(robust_similarity(centres, np.array(targets))))


def robust_similarity(source: np.ndarray, target: np.ndarray, iterations: int = 30) -> np.ndarray:
    """The 3x4 similarity ``[sR | t]`` taking ``source`` points [N, 3] onto ``target``, fitted by iteratively
    reweighted least squares with Cauchy weights whose scale is the residuals' own (1.4826 x their median)."""
    weights = np.ones(len(source))
    matrix = np.hstack([np.eye(3), np.zeros((3, 1))])
    for _ in range(iterations):
        w = weights / weights.sum()
        mean_s, mean_t = w @ source, w @ target
        cs, ct = source - mean_s, target - mean_t
        u, sv, vt = np.linalg.svd((ct * w[:, None]).T @ cs)
        d = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(u @ vt)))])
        rotation = u @ d @ vt
        scale = float(np.trace(np.diag(sv) @ d) / (w @ (cs**2).sum(1)))
        matrix = np.hstack([scale * rotation, (mean_t - scale * rotation @ mean_s)[:, None]])
        residual = np.linalg.norm(source @ matrix[:, :3].T + matrix[:, 3] - target, axis=1)
        weights = 1.0 / (1.0 + (residual / max(1.4826 * float(np.median(residual)), 1e-6)) ** 2)
    return matrix

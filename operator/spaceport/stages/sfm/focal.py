"""Focal length: the EXIF value as a start, held fixed only where the photos cannot tell it from the depth.

Seen from far above flat ground, a longer focal length and a higher flight explain the photos equally well,
so a refined focal length drifts with the depth: on a generated flight with exact EXIF (relief 0.7% of the
flight height) the global mapper's came out 2x long and the incremental mapper's 13% long, camera centres
2.2 and 1.9 m off their exact tags; held at EXIF, 0.07 m. Where the ground has relief the photos do pin it
down, and an EXIF value held fixed is wrong by however far it is off: on a real survey (relief 6% of the
height) two mappers agreed on a focal length 2% longer than the camera's focal-plane tags, and holding the
tag value moved the cameras' median disagreement with GPS from 1.6 to 2.3 m. A phone's 35 mm equivalent
held fixed left 2 of 29 photos registered.

So the stage maps refining the focal length, measures the scene, and only where the relief is under
FLAT_MAX_RELIEF of the cameras' height (the photos then cannot fix the focal length to better than a few
percent, which is about how far EXIF values are off) maps again with EXIF held, keeping whichever model
agrees better with GPS: there the photos cannot decide, and the GPS altitudes can.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycolmap

from spaceport.stages.sfm.georef import GeoFrame, agreement

FOCAL_DRIFT_WARN = 0.05
"""An estimated focal length further than this share from its EXIF value is reported."""
FLAT_MAX_RELIEF = 0.02
"""Flat: the ground's relief (10th to 90th percentile of point heights) is below this share of the cameras'
median height above it."""
GPS_TIE = 1.1
"""The held model is kept unless its median disagreement with GPS exceeds this factor of the refined one's plus
the standard error the tags' accuracy gives that median."""


@dataclass(frozen=True)
class FocalOutcome:
    mode: str  # "exif" (held at EXIF), "refined" (started from EXIF), "estimated" (some photos had no EXIF value)
    reason: str


def relief(rec: pycolmap.Reconstruction) -> float:
    """The ground's relief as a share of the cameras' median height above it (inf when the cameras are not above
    the points); the model must be in an ENU (z-up) frame."""
    z = np.array([p.xyz[2] for p in rec.points3D.values()])
    heights = [float(np.asarray(im.projection_center())[2]) for im in rec.images.values() if im.has_pose]
    if z.size < 10 or not heights:
        return float("inf")
    height = float(np.median(heights)) - float(np.median(z))
    return float(np.percentile(z, 90) - np.percentile(z, 10)) / height if height > 0 else float("inf")


def held_is_better(held: list[pycolmap.Reconstruction], refined: pycolmap.Reconstruction,
                   frame: GeoFrame) -> tuple[bool, str]:
    """Whether the model mapped with EXIF focal lengths held should replace the refined one, and why."""
    if not held or held[0].num_reg_images() < refined.num_reg_images() - max(1, refined.num_reg_images() // 50):
        n = held[0].num_reg_images() if held else 0
        return False, f"held at EXIF only {n} photos registered (refined: {refined.num_reg_images()})"
    a_held, a_refined = agreement(held[0], frame), agreement(refined, frame)
    if a_held is None or a_refined is None:
        return False, "no GPS tags on the registered photos"
    if a_held.bent and not a_refined.bent:
        return False, f"held at EXIF {len(a_held.outliers)} of {a_held.tagged} cameras sit far from their GPS tags"
    # Within what the tags' own noise can tell apart (the median's standard error), the EXIF value stands.
    tolerance = a_refined.expected / float(np.sqrt(max(refined.num_reg_images(), 1)))
    if a_held.median > GPS_TIE * a_refined.median + tolerance:
        return False, (f"held at EXIF the cameras sit further from their GPS tags ({a_held.median:.2f} m against "
                       f"{a_refined.median:.2f} m refined)")
    return True, (f"flat ground seen from above; held at EXIF the cameras sit {a_held.median:.2f} m from their "
                  f"GPS tags against {a_refined.median:.2f} m refined")


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

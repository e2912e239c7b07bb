"""A model is judged against its GPS tags: a few wrong tags are the tags' fault, a quarter of the cameras far from
theirs is the model's (reconstruct.unusable sends the stage to the other mapper)."""

from __future__ import annotations

import numpy as np
import pycolmap

from spaceport.stages.sfm.georef import GeoFrame, agreement
from spaceport.stages.sfm.reconstruct import unusable

SIGMA_H, SIGMA_V = 2.0, 4.0


def model_at(centres: np.ndarray) -> pycolmap.Reconstruction:
    """A model whose cameras sit at ``centres`` (looking along +z; only their positions matter here)."""
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=400, height=300,
                                                    params=[300, 300, 200, 150], camera_id=1))
    for i, c in enumerate(centres, start=1):
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(np.eye(3)), -np.asarray(c, np.float64))
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{i:02d}.jpg", camera_id=1, image_id=i), pose)
    return rec


def flight(n: int = 24) -> tuple[GeoFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    tags = np.stack([np.arange(n) % 6 * 20.0, np.arange(n) // 6 * 25.0, np.full(n, 80.0)], 1)
    frame = GeoFrame(47.0, 8.0, 400.0, {f"{i:02d}.jpg": t for i, t in enumerate(tags, start=1)},
                     {f"{i:02d}.jpg": (SIGMA_H, SIGMA_V) for i in range(1, n + 1)})
    honest = tags + rng.normal(0, [SIGMA_H / 2, SIGMA_H / 2, SIGMA_V / 2], tags.shape)  # well within the tags' noise
    return frame, honest


def test_two_wrong_tags_are_the_tags_fault() -> None:
    frame, centres = flight()
    for i in (5, 17):  # a receiver's glitch: two tags ~110 m north of where the photos were taken
        frame.positions[f"{i:02d}.jpg"] = frame.positions[f"{i:02d}.jpg"] + [0.0, 111.0, 0.0]
    rec = model_at(centres)
    fit = agreement(rec, frame)
    assert fit is not None and len(fit.outliers) == 2 and fit.tagged == 24 and not fit.bent
    assert unusable([rec], frame, 24, 0.9) is None


def test_a_quarter_of_the_cameras_far_from_their_tags_is_a_broken_model() -> None:
    frame, centres = flight()
    broken = centres.copy()
    broken[15:] += [0.0, 0.0, 30.0]  # 9 of 24 cameras: the median still agrees, the model does not
    rec = model_at(broken)
    fit = agreement(rec, frame)
    assert fit is not None and fit.explained and fit.bent
    assert unusable([rec], frame, 24, 0.9) == "places 9 of 24 cameras beyond 3 standard deviations of their GPS tags"

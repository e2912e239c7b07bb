"""Placing a model on its GPS tags: a robust similarity, so that a few wrong tags do not move it."""

from __future__ import annotations

import numpy as np
import pytest

from spaceport.stages.sfm.georef import robust_similarity


def test_similarity_from_the_bulk_of_the_tags_not_their_tail() -> None:
    rng = np.random.default_rng(0)
    model = rng.normal(size=(60, 3)) * [40.0, 40.0, 2.0]  # camera centres of a survey, model units
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation *= np.sign(np.linalg.det(rotation))
    tags = 1.5 * model @ rotation.T + [10.0, -20.0, 90.0] + rng.normal(scale=0.5, size=(60, 3))
    tags[:6] += [60.0, 0.0, 0.0]  # six tags 60 m east: a receiver's glitch
    matrix = robust_similarity(model, tags)
    placed = model @ matrix[:, :3].T + matrix[:, 3]
    errors = np.linalg.norm(placed - tags, axis=1)
    assert np.median(errors[6:]) < 1.0 and errors[:6].min() > 55  # the glitches stay visible as such
    assert np.linalg.det(matrix[:, :3]) ** (1 / 3) == pytest.approx(1.5, rel=0.01)

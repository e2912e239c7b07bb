"""Reading camera centres out of a COLMAP model, for comparison with a synthetic flight's ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycolmap

from spaceport.synthetic import Flight
from spaceport.synthetic.evaluate import centre_error


def model_centres(sparse: Path) -> dict[str, np.ndarray]:
    rec = pycolmap.Reconstruction(str(sparse))
    return {im.name: np.asarray(im.projection_center()) for im in rec.images.values() if im.has_pose}


def alignment_error(centres: dict[str, np.ndarray], flight: Flight) -> tuple[float, float]:
    """(similarity scale, largest centre error after the similarity as a fraction of the flight's extent)."""
    assert sorted(centres) == sorted(flight.image_names), "every image must be registered"
    return centre_error(centres, flight)

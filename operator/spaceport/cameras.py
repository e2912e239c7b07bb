"""The trained cameras (``cameras.json``) and held-out photos (``holdout/``): what the training stage hands to the
compression stage and the viewer beside its splats (file names in api/stages.py). Plain numpy, no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from spaceport.api.stages import TRAIN
from spaceport.contract import BadInputError
from spaceport.storage import Store

CAMERAS_FILE = TRAIN.files.cameras
HOLDOUT_DIR = TRAIN.files.holdout
"""Held-out ground-truth images at the trained resolution (lossless PNG), for PSNR after compression."""


def holdout_key(name: str) -> str:
    """Store key of a held-out view's ground-truth image: ``holdout/<image name>.png``."""
    return f"{HOLDOUT_DIR}/{name}.png"


@dataclass
class Camera:
    """A pinhole camera. ``world_to_camera`` uses OpenCV axes: x right, y down, z forward."""

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray  # [4, 4] float64
    held_out: bool = False

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)

    @property
    def centre(self) -> np.ndarray:
        R, t = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return -R.T @ t

    def scaled(self, factor: float) -> Camera:
        """The same camera for an image resized by ``factor`` (e.g. 0.5 for half size)."""
        width, height = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = width / self.width, height / self.height
        return Camera(self.name, width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                      self.world_to_camera.copy(), self.held_out)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "width": self.width, "height": self.height,
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "worldToCamera": [[float(v) for v in row] for row in self.world_to_camera],
            "heldOut": self.held_out,
        }
        if self.held_out:
            out["image"] = holdout_key(self.name)  # the ground truth the train stage wrote
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Camera:
        matrix = np.asarray(data["worldToCamera"], np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"worldToCamera must be 4x4, got {list(matrix.shape)}")
        return cls(str(data["name"]), int(data["width"]), int(data["height"]), float(data["fx"]),
                   float(data["fy"]), float(data["cx"]), float(data["cy"]), matrix, bool(data.get("heldOut", False)))


def cameras_json(cameras: list[Camera]) -> str:
    return json.dumps({"cameras": [c.to_json() for c in cameras]}, indent=1)


def load_cameras(store: Store) -> list[Camera]:
    """Read ``cameras.json`` from a train output folder."""
    if not store.exists(CAMERAS_FILE):
        raise BadInputError(f"{store.uri_of(CAMERAS_FILE)} does not exist")
    try:
        data = json.loads(store.read_text(CAMERAS_FILE))
        return [Camera.from_json(c) for c in data["cameras"]]
    except (ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{store.uri_of(CAMERAS_FILE)}: not a valid cameras file ({e})") from e

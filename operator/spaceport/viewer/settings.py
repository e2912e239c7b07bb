"""The viewer's settings.json (schema version 2 of @playcanvas/supersplat-viewer) and its start camera.

Two facts about that viewer shape the camera maths here:

- it turns every splat scene by 180 degrees about Z (3DGS scenes are stored y-down), so a point
  (x, y, z) of our scene is drawn at (-x, -y, z) in the viewer's world; camera poses in settings.json
  are in the viewer's world;
- a pose is a position and a look-at target with no roll (up is the viewer's +Y, our -Y), and the
  field of view is vertical in portrait windows and horizontal in landscape ones.

Without a start camera the viewer frames the scene's bounding box itself, so a camera is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

VIEWER_FLIP = np.diag([-1.0, -1.0, 1.0])
"""Our world → the viewer's world (its 180° turn about Z); its own inverse."""

DEFAULT_FOV_DEG = 60.0


@dataclass(frozen=True)
class ViewPose:
    """A start camera in the viewer's world: position, look-at target, field of view in degrees."""

    position: tuple[float, float, float]
    target: tuple[float, float, float]
    fov: float

    def to_settings(self) -> dict[str, Any]:
        return {"initial": {"position": list(self.position), "target": list(self.target), "fov": self.fov}}

    def world_to_camera(self) -> np.ndarray:
        """The same camera as a 4x4 world→camera matrix in OUR world, OpenCV axes (x right, y down, z fwd).

        Used to render with our own rasterizer what the viewer shows from this pose.
        """
        c = VIEWER_FLIP @ np.asarray(self.position, float)
        forward = VIEWER_FLIP @ np.asarray(self.target, float) - c
        z = forward / np.linalg.norm(forward)
        down = np.array([0.0, 1.0, 0.0])  # the viewer's -Y, in our world
        x = np.cross(down, z)
        if np.linalg.norm(x) < 1e-9:  # looking straight along the up axis: any roll is the viewer's choice
            x = np.cross(np.array([0.0, 0.0, 1.0]), z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        rot = np.stack([x, y, z])
        w2c = np.eye(4)
        w2c[:3, :3] = rot
        w2c[:3, 3] = -rot @ c
        return w2c

    def intrinsics(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) of the viewer's projection in a ``width`` x ``height`` window."""
        span = width if width > height else height
        f = 0.5 * span / np.tan(np.radians(self.fov) / 2)
        return f, f, width / 2, height / 2


def pose_from_camera(world_to_camera: np.ndarray, width: int, height: int, fx: float, fy: float,
                     focus_distance: float) -> ViewPose:
    """The viewer pose closest to one of our cameras (roll is dropped: the viewer has none)."""
    w2c = np.asarray(world_to_camera, float)
    rot, t = w2c[:3, :3], w2c[:3, 3]
    centre = -rot.T @ t
    forward = rot.T @ np.array([0.0, 0.0, 1.0])
    target = centre + forward * max(focus_distance, 1e-3)
    # The viewer's fov spans the longer side; ours is fixed by the trained camera's focal length.
    span, focal = (width, fx) if width > height else (height, fy)
    fov = float(np.degrees(2 * np.arctan(0.5 * span / focal)))
    p, q = VIEWER_FLIP @ centre, VIEWER_FLIP @ target
    return ViewPose(tuple(float(v) for v in p), tuple(float(v) for v in q), round(min(max(fov, 10.0), 120.0), 3))


def focus_distance(world_to_camera: np.ndarray, means: np.ndarray | None, fallback: float) -> float:
    """Median depth of the scene in front of the camera: where the viewer should orbit."""
    if means is None or len(means) == 0:
        return fallback
    w2c = np.asarray(world_to_camera, float)
    depth = (np.asarray(means, float) @ w2c[2, :3]) + w2c[2, 3]
    depth = depth[np.isfinite(depth) & (depth > 0)]
    return float(np.median(depth)) if len(depth) else fallback


def settings_json(pose: ViewPose | None, background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> dict[str, Any]:
    """A complete settings.json. With a pose, the view holds still at it until the user moves.

    The viewer otherwise starts an automatic orbit from the pose, and for a top-down drone camera
    that orbit begins somewhere else; a still start is what a reviewer (and our browser test) expects.
    """
    cameras, tracks, start = [], [], "default"
    if pose is not None:
        cameras = [pose.to_settings()]
        tracks = [{
            "name": "start",
            "duration": 1,
            "frameRate": 1,
            "loopMode": "none",
            "interpolation": "step",
            "smoothness": 0,
            "keyframes": {
                "times": [0, 1],
                "values": {"position": [*pose.position, *pose.position], "target": [*pose.target, *pose.target],
                           "fov": [pose.fov, pose.fov]},
            },
        }]
        start = "animTrack"
    return {
        "version": 2,
        "tonemapping": "none",
        "highPrecisionRendering": False,
        "background": {"color": list(background)},
        "postEffectSettings": {
            "sharpness": {"enabled": False, "amount": 0},
            "bloom": {"enabled": False, "intensity": 0.1, "blurLevel": 2},
            "grading": {"enabled": False, "brightness": 1, "contrast": 1, "saturation": 1, "tint": [1, 1, 1]},
            "vignette": {"enabled": False, "intensity": 0.5, "inner": 0.3, "outer": 0.75, "curvature": 1},
            "fringing": {"enabled": False, "intensity": 0.5},
        },
        "animTracks": tracks,
        "cameras": cameras,
        "annotations": [],
        "startMode": start,
    }

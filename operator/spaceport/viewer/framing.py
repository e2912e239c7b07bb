"""Where the viewer opens: the scene's up axis, and a start camera that frames the reconstruction.

PlayCanvas's viewer orbits about its own +Y and draws every scene turned 180° about Z (settings.py),
so a scene whose up is our -Y (3DGS's habit: cameras held upright, image-down along +Y) orbits about its
up. A georeferenced scene is east-north-up: its up is +Z. For such a scene the page turns the splats
(the entity's rotation, :func:`entity_rotation`) so that the scene's up becomes the viewer's, and every
camera pose is given in that turned world. The .sog itself stays in the scene's own frame.

The start camera:

- an aerial flight (the cameras above the scene, looking down) opens above the survey area, looking
  down at its middle from :data:`AERIAL_ELEVATION_DEG` above the horizon, far enough back to hold the
  whole area, with north (or the photos' own up) at the top of the screen;
- anything else opens at the middle training camera, looking at the scene in front of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spaceport.viewer.settings import VIEWER_FLIP, ViewPose, focus_distance, pose_from_camera

VIEWER_UP = np.array([0.0, -1.0, 0.0])
"""The up axis the viewer orbits about, in a scene's own frame (its +Y after the 180° turn about Z)."""
AERIAL_ELEVATION_DEG = 70.0
"""How far above the horizon the aerial start camera sits, seen from the survey's middle: steep enough to
read the ground like a map, oblique enough to show that it is 3D."""
AERIAL_LOOK_DOWN = 0.5
"""An aerial flight's cameras look down: the mean of their view directions · up is below -this (30°)."""
FRAME_MARGIN = 1.08
"""Room around the framed area, as a factor on the distance."""


@dataclass(frozen=True)
class StartView:
    """What write_viewer needs: the start pose (viewer world), the scene turn, and how it was chosen."""

    pose: ViewPose | None
    turn: np.ndarray | None
    """3x3 rotation from the .sog's frame to the frame the viewer should draw (its up is our -Y); None: none."""
    kind: str
    """``aerial`` (above the survey area), ``camera`` (a training camera) or ``none`` (the viewer frames it)."""


def scene_up(w2cs: list[np.ndarray], georef: dict[str, Any] | None) -> np.ndarray | None:
    """The scene's up axis in the cameras' world: +Z for an east-north-up scene; else, for photos taken
    upright (their mean image up is clear), the direction their horizontal image rows all lie across, so
    that photos tilted up or down do not tilt the world; else None (keep the viewer's own)."""
    if georef and str(georef.get("frame", "ENU")).upper() == "ENU":
        return np.array([0.0, 0.0, 1.0])
    if not w2cs:
        return None
    ups = np.array([-np.asarray(w)[1, :3] for w in w2cs])  # image up (-y of the camera) in the world
    mean = ups.mean(0)
    if np.linalg.norm(mean) <= 0.5:  # e.g. a lawnmower flight's photos, turned round every pass
        return None
    rights = np.array([np.asarray(w)[0, :3] for w in w2cs])
    values, vectors = np.linalg.eigh(rights.T @ rights / len(rights))
    across = vectors[:, values < 0.1]  # directions no image row points along: up, if the photos were upright
    mean /= np.linalg.norm(mean)
    if across.shape[1] == 2:
        # The rows all point one way (photos facing one direction): up lies in the plane across them, and
        # their tilt does not say where. Keep the frame's own up when it fits, else the photos' mean up.
        own = across @ (across.T @ VIEWER_UP)
        if np.linalg.norm(own) > 0.9 and own @ mean > np.cos(np.radians(30)) * np.linalg.norm(own):
            return own / np.linalg.norm(own)
    up = across @ (across.T @ mean) if across.shape[1] else mean
    return up / np.linalg.norm(up) if np.linalg.norm(up) > 0.5 else mean


def turn_to_viewer(up: np.ndarray) -> np.ndarray:
    """The smallest rotation taking ``up`` onto the viewer's up (our -Y)."""
    u = np.asarray(up, float) / np.linalg.norm(up)
    axis, cos = np.cross(u, VIEWER_UP), float(u @ VIEWER_UP)
    if np.linalg.norm(axis) < 1e-9:
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])  # opposite: half a turn about X
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + k + k @ k / (1 + cos)  # Rodrigues, with sin folded into |axis|


def entity_rotation(turn: np.ndarray) -> list[float]:
    """The splat entity's rotation in the viewer, as a quaternion [x, y, z, w]: its own 180° about Z after
    ``turn``."""
    m = VIEWER_FLIP @ np.asarray(turn, float)
    w = np.sqrt(max(0.0, 1 + np.trace(m))) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    if w < 1e-6:  # half turns: the signs of the off-diagonal sums, not differences, relate x, y and z
        x, y, z = _half_turn_axis(m)
    return [round(float(v), 9) for v in (x, y, z, w)]


def _half_turn_axis(m: np.ndarray) -> tuple[float, float, float]:
    a = np.sqrt(np.clip((np.diag(m) + 1) / 2, 0, None))
    i = int(np.argmax(a))
    for j in range(3):
        if j != i:
            a[j] = np.copysign(a[j], m[i, j])
    return float(a[0]), float(a[1]), float(a[2])


def choose_start(cameras: list[dict[str, Any]], means: np.ndarray | None = None,
                 georef: dict[str, Any] | None = None, scene_rotation: np.ndarray | None = None) -> StartView:
    """The start view for a trained scene: ``cameras`` are cameras.json entries, ``means`` the splat centres
    (both in the cameras' world), ``scene_rotation`` how the .sog relates to that world (sog = R · world)."""
    if not cameras:
        return StartView(None, None, "none")
    ordered = sorted(cameras, key=lambda c: c.get("name", ""))
    w2cs = [np.asarray(c["worldToCamera"], float) for c in ordered]
    rotation = np.eye(3) if scene_rotation is None else np.asarray(scene_rotation, float)
    up = scene_up(w2cs, georef)
    turn = None if up is None else turn_to_viewer(rotation @ up)
    if turn is not None and np.allclose(turn, np.eye(3), atol=1e-9):
        turn = None
    to_viewer = (np.eye(3) if turn is None else turn) @ rotation  # the cameras' world -> the drawn frame
    pts = None if means is None or len(means) == 0 else np.asarray(means, float)
    if up is not None and _is_aerial(w2cs, up, pts):
        return StartView(_aerial_pose(ordered, w2cs, pts, up, georef is not None, to_viewer), turn, "aerial")
    return StartView(_camera_pose(ordered, w2cs, pts, to_viewer), turn, "camera")


def _centres(w2cs: list[np.ndarray]) -> np.ndarray:
    return np.array([-w[:3, :3].T @ w[:3, 3] for w in w2cs])


def _is_aerial(w2cs: list[np.ndarray], up: np.ndarray, means: np.ndarray | None) -> bool:
    looks = float(np.mean([w[2, :3] @ up for w in w2cs]))
    if looks > -AERIAL_LOOK_DOWN:
        return False
    if means is None:
        return True
    return float(np.median(_centres(w2cs) @ up)) > float(np.median(means @ up))


def _camera_pose(ordered: list[dict[str, Any]], w2cs: list[np.ndarray], means: np.ndarray | None,
                 to_viewer: np.ndarray) -> ViewPose:
    """The middle training camera, orbiting about the median depth of the scene in front of it."""
    i = len(ordered) // 2
    cam, w2c = ordered[i], w2cs[i]
    spread = float(np.linalg.norm(np.ptp(_centres(w2cs), axis=0))) or 1.0
    distance = focus_distance(w2c, means, fallback=spread / 2)
    undo = np.eye(4)
    undo[:3, :3] = to_viewer.T
    return pose_from_camera(w2c @ undo, int(cam["width"]), int(cam["height"]), float(cam["fx"]), float(cam["fy"]),
                            distance)


def _aerial_pose(ordered: list[dict[str, Any]], w2cs: list[np.ndarray], means: np.ndarray | None, up: np.ndarray,
                 georeferenced: bool, to_viewer: np.ndarray) -> ViewPose:
    """Above the survey area's middle, looking down at it, far enough back to hold all of it."""
    centres = _centres(w2cs)
    # Screen-up on the ground: north for a georeferenced scene, else the photos' own mean image up.
    north = np.array([0.0, 1.0, 0.0]) if georeferenced else np.mean([-w[1, :3] for w in w2cs], axis=0)
    north = north - (north @ up) * up
    if np.linalg.norm(north) < 1e-6:
        north = np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])
    north /= np.linalg.norm(north)
    east = np.cross(north, up)
    flat = np.stack([east, north], 1)  # world -> (east, north) on the ground
    cam = ordered[len(ordered) // 2]
    width, height, fx, fy = int(cam["width"]), int(cam["height"]), float(cam["fx"]), float(cam["fy"])
    flying = float(np.median(centres @ up))
    lo, hi = (centres @ flat).min(0), (centres @ flat).max(0)
    ground = flying - max(float(np.max(hi - lo)) / 2, 1.0)  # without points: a guess below the flight
    if means is not None:
        # The ground the photos saw together: points under the flight and a quarter of a photo's footprint beyond
        # it (the edges, seen by one photo at a slant, are the blurriest part), not far floaters.
        ground = float(np.median(means @ up))
        reach = max(flying - ground, 1e-6) * 0.25 * max(width / fx, height / fy)
        inside = np.all(np.abs(means @ flat - (lo + hi) / 2) <= (hi - lo) / 2 + reach, axis=1)
        if inside.sum() >= 10:
            seen = means[inside]
            ground = float(np.median(seen @ up))
            lo, hi = np.percentile(seen @ flat, 2, axis=0), np.percentile(seen @ flat, 98, axis=0)
    middle = flat @ ((lo + hi) / 2) + ground * up
    half_east, half_north = np.maximum((hi - lo) / 2, 1e-3)
    # The viewer's fov spans a window's longer side; assume a landscape window no wider than 16:9.
    fov = float(np.clip(np.degrees(2 * np.arctan(0.5 * max(width, height) / (fx if width >= height else fy))),
                        40.0, 70.0))
    across_tan = np.tan(np.radians(fov) / 2)
    along_tan = across_tan * 9 / 16
    elevation = np.radians(AERIAL_ELEVATION_DEG)
    distance = FRAME_MARGIN * max(half_east / across_tan + half_north * np.cos(elevation),
                                  half_north * np.sin(elevation) / along_tan + half_north * np.cos(elevation))
    forward = np.cos(elevation) * north - np.sin(elevation) * up
    position = middle - forward * distance
    p, t = VIEWER_FLIP @ to_viewer @ position, VIEWER_FLIP @ to_viewer @ middle
    return ViewPose(tuple(float(v) for v in p), tuple(float(v) for v in t), round(float(fov), 3))

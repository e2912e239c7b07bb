"""Seeds for the sky: a shell of Gaussians far beyond the scene wherever the training photos look above
the horizon.

SfM triangulates nothing in the sky, so a photo set taken from the ground starts with no Gaussian there.
Training then explains the sky with whatever lies in front of it: the scene's own Gaussians grow into haze
and streaks between the cameras and the houses, which every other view sees as fog (held-out views of a
street walk fell to ~11 dB this way). Seeding a background shell (as Hierarchical 3DGS seeds its skybox)
gives the sky Gaussians of its own, at a distance where parallax between the photos is small, coloured
from the photos where they see it. Photos that never look above the horizon (a nadir survey) get none.

The rule follows the photos: the share of training pixels whose ray points above the horizon (the scene's
up from the ENU frame when georeferenced, else the photos' mean image up), the seeds' spacing from the
photos' angular resolution, the shell's radius from the extent of the SfM points.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from spaceport.stages.train.data import View
from spaceport.stages.train.render import Camera

MIN_SKY_SHARE = 0.02
"""Share of the training photos' pixels looking above the horizon under which no sky is seeded."""
SPACING_PX = 8.0
"""Angular spacing of the seeds, in the photos' pixels (the sky is smooth; training splits where it is not)."""
DISTANCE = 10.0
"""Radius of the shell, in multiples of the SfM points' reach from the cameras' centroid (99th percentile)."""
BELOW_HORIZON = 0.1
"""Seeds go down to this sine of the elevation below the horizon: far ground beyond the model is background too."""
COLOUR_WIDTH = 96
"""Photos are averaged down to this width to colour the seeds (the sky's colour, not its texture)."""
COLOUR_VIEWS = 48
"""At most this many photos, evenly spread over the set, colour the seeds (memory: seeds x photos x 3)."""
OPACITY = 0.7
"""Initial opacity of sky seeds (the scene's own start at 0.1): the sky is an opaque background."""


def scene_up(views: list[View], georef: bytes | None) -> np.ndarray | None:
    """+Z for a model in an east-north-up frame; else the photos' mean image up when they were taken upright
    (its length over 0.5), else None: no horizon can be told."""
    if georef:
        try:
            frame = str(json.loads(georef).get("frame", "ENU")).upper()
        except (ValueError, AttributeError):
            frame = ""
        if frame == "ENU":
            return np.array([0.0, 0.0, 1.0])
    if not views:
        return None
    mean = np.mean([-v.camera.world_to_camera[1, :3] for v in views], axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0.5 else None


def _rays(cam: Camera, step: int) -> np.ndarray:
    """World directions (unit) through a grid of every ``step``-th pixel centre of ``cam``."""
    xs, ys = np.meshgrid(np.arange(step / 2, cam.width, step), np.arange(step / 2, cam.height, step))
    d = np.stack([(xs - cam.cx) / cam.fx, (ys - cam.cy) / cam.fy, np.ones_like(xs)], -1).reshape(-1, 3)
    d = d @ cam.world_to_camera[:3, :3]  # R^T applied to each ray
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def sky_share(cams: list[Camera], up: np.ndarray) -> float:
    """The share of the photos' pixels whose ray points above the horizon."""
    if not cams:
        return 0.0
    return float(np.mean([(_rays(c, max(1, c.width // 64)) @ up > 0).mean() for c in cams]))


def fibonacci_sphere(count: int) -> np.ndarray:
    """``count`` unit vectors spread evenly over the sphere."""
    i = np.arange(count) + 0.5
    z = 1 - 2 * i / count
    r = np.sqrt(np.clip(1 - z * z, 0, None))
    phi = i * math.pi * (3 - math.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def _rotation_to(up: np.ndarray) -> np.ndarray:
    """A rotation taking +Z onto ``up``."""
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(z, up), float(z @ up)
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def sky_points(views: list[View], sfm_points: np.ndarray, up: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """Sky seeds for ``views`` (training views only): positions ``[S, 3]``, colours ``[S, 3]`` in 0..1, and
    the seeds' radius in world units; empty when the photos do not look above the horizon."""
    none = np.empty((0, 3)), np.empty((0, 3), np.float32), 0.0
    cams = [v.camera for v in views]
    if up is None or not cams or len(sfm_points) == 0 or sky_share(cams, up) < MIN_SKY_SHARE:
        return none
    centre = np.mean([c.centre for c in cams], axis=0)
    radius = DISTANCE * float(np.percentile(np.linalg.norm(sfm_points - centre, axis=1), 99))
    spacing = SPACING_PX / float(np.median([c.fx for c in cams]))  # radians between neighbouring seeds
    directions = fibonacci_sphere(max(1, int(4 * math.pi / spacing**2))) @ _rotation_to(up).T
    directions = directions[directions @ up > -BELOW_HORIZON]
    points = centre + radius * directions
    samples: list[torch.Tensor] = []  # per view: [S, 3] colours, NaN where the view does not see the seed
    for view in views[::max(1, math.ceil(len(views) / COLOUR_VIEWS))]:
        scale = min(1.0, COLOUR_WIDTH / view.camera.width)
        cam = view.camera.scaled(scale)
        image = F.interpolate(view.image.permute(2, 0, 1)[None].float() / 255, size=(cam.height, cam.width),
                              mode="area")
        local = points @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
        z = local[:, 2]
        u = (cam.fx * local[:, 0] / np.maximum(z, 1e-9) + cam.cx) / cam.width * 2 - 1
        v = (cam.fy * local[:, 1] / np.maximum(z, 1e-9) + cam.cy) / cam.height * 2 - 1
        seen = torch.tensor((z > 0) & (np.abs(u) < 1) & (np.abs(v) < 1))
        grid = torch.tensor(np.stack([u, v], -1), dtype=torch.float32)[None, None]
        colour = F.grid_sample(image, grid, padding_mode="border", align_corners=False)[0, :, 0].T  # [S, 3]
        samples.append(torch.where(seen[:, None], colour, torch.full_like(colour, float("nan"))))
    colours = torch.stack(samples).nanmedian(0).values.numpy()
    seen_once = ~np.isnan(colours).any(1)
    return points[seen_once], colours[seen_once].astype(np.float32), float(radius * spacing)

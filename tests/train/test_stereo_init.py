"""Plane-sweep stereo seeds on a scene with a known surface: a textured ground plane seen from above."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from spaceport.stages.train.data import View
from spaceport.stages.train.render import Camera
from spaceport.stages.train.stereo_init import stereo_points
from tests.train.fixtures import look_at

GROUND_HALF = 20.0  # metres; the texture covers [-20, 20]^2 at z = 0


def ground_texture(seed: int = 0, size: int = 400) -> np.ndarray:
    noise = np.random.default_rng(seed).random((size, size, 3))
    return np.clip(ndimage.gaussian_filter(noise, (3, 3, 0)) * 3 - 1, 0, 1)  # blobs ~1 m across


def photo(cam: Camera, texture: np.ndarray) -> torch.Tensor:
    """What ``cam`` sees of the plane z = 0 (nearest texel), as a ``[H, W, 3]`` uint8 image."""
    ys, xs = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    rays = np.stack([(xs - cam.cx) / cam.fx, (ys - cam.cy) / cam.fy, np.ones_like(xs)], -1)
    rays = rays @ cam.world_to_camera[:3, :3]  # to world directions
    t = -cam.centre[2] / rays[..., 2]
    hit = cam.centre[:2] + t[..., None] * rays[..., :2]
    size = texture.shape[0]
    ij = np.clip(((hit + GROUND_HALF) / (2 * GROUND_HALF) * size).astype(int), 0, size - 1)
    return torch.from_numpy((texture[ij[..., 1], ij[..., 0]] * 255).astype(np.uint8))


def test_seeds_lie_on_the_surface_with_its_colours() -> None:
    texture = ground_texture()
    views = []
    for i, x in enumerate(np.linspace(-6, 6, 7)):
        centre = np.array([x, (i % 2) * 2.0, 15.0])
        ahead = centre + np.array([0.3, 0.0, -1.0])  # looking down, tilted forward
        cam = Camera(f"v{i}.png", 120, 90, 100.0, 100.0, 60.0, 45.0, look_at(centre, ahead))
        views.append(View(cam, photo(cam, texture)))
    sfm = np.random.default_rng(1).uniform([-8, -4, -0.05], [8, 6, 0.05], (50, 3))  # a sparse model: depth range
    points, colours = stereo_points(views, sfm, 5000, np.random.default_rng(0))
    assert len(points) == 5000
    assert float(np.median(np.abs(points[:, 2]))) < 0.15  # 1% of the 15 m flying height
    assert float(np.mean(np.abs(points[:, 2]) < 0.5)) > 0.9
    size = texture.shape[0]
    ij = np.clip(((points[:, :2] + GROUND_HALF) / (2 * GROUND_HALF) * size).astype(int), 0, size - 1)
    truth = texture[ij[:, 1], ij[:, 0]]
    assert float(np.median(np.abs(colours - truth))) < 0.05


def test_no_seeds_without_a_second_view_or_a_budget() -> None:
    cam = Camera("only.png", 40, 30, 40.0, 40.0, 20.0, 15.0, look_at(np.array([0, 0, 10.0]), np.array([0.1, 0, 0])))
    view = View(cam, photo(cam, ground_texture()))
    sfm = np.zeros((20, 3))
    assert len(stereo_points([view], sfm, 100, np.random.default_rng(0))[0]) == 0
    assert len(stereo_points([view, view], sfm, 0, np.random.default_rng(0))[0]) == 0

"""Synthetic splat scenes and cameras with trained-scene-like statistics, for tests and benchmarks.

A drone-survey-like layout: a ground plane with a few boxes ("buildings"), splat sizes tied to local
density, bimodal opacities, colour that varies smoothly in space, and view-dependent SH of low rank
plus small noise (trained scenes' f_rest values are small and strongly correlated).
"""

from __future__ import annotations

import json

import numpy as np

from spaceport.splats import SH_COEFFS_FOR_DEGREE, GaussianScene


def synthetic_scene(n: int, sh_degree: int = 3, seed: int = 0, extent: float = 20.0) -> GaussianScene:
    rng = np.random.default_rng(seed)
    ground = int(n * 0.6)
    pts = np.empty((n, 3))
    pts[:ground, :2] = rng.uniform(-extent, extent, (ground, 2))
    pts[:ground, 2] = 0.05 * rng.normal(size=ground) + 0.3 * np.sin(pts[:ground, 0] / 3)
    boxes = rng.uniform(-extent * 0.7, extent * 0.7, (6, 2))
    sizes = rng.uniform(2, 5, (6, 3))
    which = rng.integers(0, 6, n - ground)
    face = rng.uniform(-1, 1, (n - ground, 3))
    axis = rng.integers(0, 3, n - ground)
    face[np.arange(n - ground), axis] = np.sign(face[np.arange(n - ground), axis])  # on the box surface
    pts[ground:] = np.c_[boxes[which], sizes[which, 2]] + face * sizes[which] * 0.5
    means = pts.astype(np.float32)
    spacing = np.log(2 * extent / np.sqrt(n))
    scales = (spacing + 0.5 * rng.normal(size=(n, 3)) - [0, 0, 1.0]).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    opac = np.where(rng.random(n) < 0.7, rng.normal(3, 1.5, n), rng.normal(-2, 2, n)).astype(np.float32)
    freq = rng.normal(size=(3, 3)) / extent * 3
    sh0 = (0.8 * np.sin(pts @ freq) + 0.15 * rng.normal(size=(n, 3))).astype(np.float32)
    k = SH_COEFFS_FOR_DEGREE[sh_degree]
    if k:
        latent = np.c_[np.sin(pts @ rng.normal(size=(3, 4)) / extent * 4), rng.normal(size=(n, 4))]
        basis = rng.normal(size=(8, k * 3)) * 0.06 / np.sqrt(np.arange(1, 9))[:, None]
        shn = (latent @ basis + 0.01 * rng.normal(size=(n, k * 3))).astype(np.float32).reshape(n, 3, k)
        shn = np.ascontiguousarray(shn.transpose(0, 2, 1))
    else:
        shn = np.zeros((n, 0, 3), np.float32)
    return GaussianScene(means, scales, quats, opac, sh0, shn)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera [4, 4], OpenCV axes (x right, y down, z forward), world z up."""
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, -rot @ eye
    return m


def orbit_cameras_json(count: int, width: int = 96, height: int = 72, radius: float = 35.0,
                       altitude: float = 25.0) -> str:
    """cameras.json (the train stage's format) for cameras circling the origin and looking at it."""
    cams = []
    for i in range(count):
        a = 2 * np.pi * i / count
        eye = np.array([radius * np.cos(a), radius * np.sin(a), altitude])
        cams.append({"name": f"view{i:03d}.jpg", "width": width, "height": height, "fx": 0.9 * width,
                     "fy": 0.9 * width, "cx": width / 2, "cy": height / 2,
                     "worldToCamera": look_at(eye, np.zeros(3)).tolist(), "heldOut": i % 8 == 0})
    return json.dumps({"cameras": cams})

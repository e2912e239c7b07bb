"""A small known scene written as an SfM output: random ground-truth Gaussians rendered from known cameras.

The images come from our own renderer, so a perfect trainer could reach them exactly; the COLMAP model
(PINHOLE cameras, poses, and sparse points sampled near the true Gaussians) is what the sfm stage would
hand over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spaceport.splats import GaussianScene
from spaceport.stages.train.rasterize import SH_C0
from spaceport.stages.train.render import Camera, render


def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera (OpenCV axes) for a camera at ``centre`` looking at ``target``, world z up."""
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, -R @ centre
    return m


def truth_scene(n: int, seed: int) -> GaussianScene:
    rng = np.random.default_rng(seed)
    means = rng.uniform([-1.2, -1.2, -0.1], [1.2, 1.2, 0.4], (n, 3)).astype(np.float32)
    colours = rng.uniform(0.05, 0.95, (n, 3)).astype(np.float32)
    return GaussianScene(
        means=means,
        scales=np.log(rng.uniform(0.04, 0.12, (n, 3))).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        opacities=rng.uniform(0.0, 3.0, n).astype(np.float32),
        sh0=((colours - 0.5) / SH_C0).astype(np.float32),
        shN=(rng.normal(size=(n, 3, 3)) * 0.1).astype(np.float32),
    )


def ground_scene(n: int, seed: int) -> GaussianScene:
    """Opaque flat Gaussians over the ground far beyond the cameras' view: every photo is filled to its corners."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.2, 0.9, (n, 3)).astype(np.float32)
    return GaussianScene(
        means=rng.uniform([-9, -9, -0.05], [9, 9, 0.05], (n, 3)).astype(np.float32),
        scales=np.log(rng.uniform(0.15, 0.4, (n, 3))).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        opacities=np.full(n, 3.0, np.float32),
        sh0=((colours - 0.5) / SH_C0).astype(np.float32),
        shN=np.zeros((n, 3, 3), np.float32),
    )


def cameras(n_views: int, width: int, height: int) -> list[Camera]:
    out = []
    for i in range(n_views):
        angle = 2 * np.pi * i / n_views
        centre = np.array([3.0 * np.cos(angle), 3.0 * np.sin(angle), 2.0])
        f = 0.9 * width
        out.append(Camera(f"view_{i:03d}.png", width, height, f, f, width / 2, height / 2,
                          look_at(centre, np.zeros(3))))
    return out


def write_sfm_output(root: Path, *, n_gaussians: int = 400, n_views: int = 12, width: int = 96, height: int = 72,
                     n_points: int = 300, seed: int = 0, georef: bool = False, suffix: str = ".png",
                     ground: bool = False) -> GaussianScene:
    """Write ``sparse/`` and ``images/`` (``suffix``: ``.png``, or ``.jpg`` as cameras write) under ``root``;
    returns the ground-truth scene (``ground``: :func:`ground_scene`, else :func:`truth_scene`)."""
    import pycolmap

    truth = (ground_scene if ground else truth_scene)(n_gaussians, seed)
    rng = np.random.default_rng(seed + 1)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "sparse").mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    cams = cameras(n_views, width, height)
    for cam in cams:
        cam.name = cam.name.removesuffix(".png") + suffix
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=width, height=height,
                                                    params=[cams[0].fx, cams[0].fy, cams[0].cx, cams[0].cy],
                                                    camera_id=1))
    pick = rng.choice(n_gaussians, n_points, replace=n_points > n_gaussians)
    xyz = truth.means[pick].astype(np.float64) + rng.normal(0, 0.03, (n_points, 3))
    colours = np.clip(truth.sh0[pick] * SH_C0 + 0.5, 0, 1)
    seen = []  # per camera: the points it observes (in front, inside the image) and where
    for i, cam in enumerate(cams, start=1):
        Image.fromarray((render(truth, cam) * 255 + 0.5).astype(np.uint8)).save(root / "images" / cam.name,
                                                                                quality=95)
        pc = xyz @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
        uv = pc[:, :2] / pc[:, 2:] * [cam.fx, cam.fy] + [cam.cx, cam.cy]
        ids = np.flatnonzero((pc[:, 2] > 0) & (uv >= 0).all(1) & (uv < [width, height]).all(1))
        seen.append(ids)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(cam.world_to_camera[:3, :3]), cam.world_to_camera[:3, 3])
        rec.add_image_with_trivial_frame(pycolmap.Image(name=cam.name, keypoints=uv[ids], camera_id=1, image_id=i),
                                         pose)
    point_ids = [rec.add_point3D(xyz[j], pycolmap.Track(), (colours[j] * 255).astype(np.uint8))
                 for j in range(n_points)]
    for i, ids in enumerate(seen, start=1):  # tracks: which photo saw which point
        for k, j in enumerate(ids):
            rec.add_observation(point_ids[j], pycolmap.TrackElement(i, k))
    rec.write_binary(str(root / "sparse"))
    if georef:
        (root / "georef.json").write_text('{"latitude": 47.0, "longitude": 8.0, "altitude": 400.0, "frame": "ENU"}')
    return truth

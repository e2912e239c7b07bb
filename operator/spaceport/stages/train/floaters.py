"""Floaters in front of the cameras: Gaussians between a camera and the nearest surface it photographs.

A Gaussian close to one training camera covers many of its pixels and few of any other's, so the photo
loss of that one camera can grow it to paint whatever that photo shows differently from the others
(exposure, a passing car, sky): a blob or a haze that every other view then sees hanging in the air. The
SfM points tell how far each camera's nearest real surface is. Each camera's near limit is a fraction of a
low percentile of the depths of the SfM points in its view; Gaussians inside that limit and inside the
camera's frustum are floaters of that camera and are removed while the scene is densified, and once more
before it is written.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from spaceport.stages.train.render import Camera

DEPTH_PERCENTILE = 5.0
"""Percentile of the SfM points' depths in a camera's view taken as its nearest surface (robust to a few
wrong points)."""
CAMERA_CHUNK = 16


def near_limits(cameras: list[Camera], points: np.ndarray, fraction: float) -> np.ndarray:
    """Per camera: ``fraction`` of the depth of its nearest photographed surface (``[V]``; 0 where the
    camera sees no SfM point, which disables the limit there)."""
    limits = np.zeros(len(cameras))
    for i, cam in enumerate(cameras):
        z, inside = _in_view(cam, points)
        if inside.any():
            limits[i] = fraction * np.percentile(z[inside], DEPTH_PERCENTILE)
    return limits


def _in_view(cam: Camera, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pc = xyz @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
    z = pc[:, 2]
    safe = np.where(z > 0, z, 1.0)
    u = cam.fx * pc[:, 0] / safe + cam.cx
    v = cam.fy * pc[:, 1] / safe + cam.cy
    return z, (z > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)


@torch.no_grad()
def near_camera_mask(means: Tensor, cameras: list[Camera], limits: np.ndarray) -> Tensor:
    """``[N]`` True for Gaussians whose mean lies in front of some camera's near limit, inside its image."""
    device, dtype = means.device, means.dtype
    mask = torch.zeros(len(means), dtype=torch.bool, device=device)
    use = [i for i, lim in enumerate(limits) if lim > 0]
    for start in range(0, len(use), CAMERA_CHUNK):
        chunk = use[start:start + CAMERA_CHUNK]
        mats = torch.tensor(np.stack([cameras[i].world_to_camera[:3] for i in chunk]), dtype=dtype, device=device)
        pc = torch.einsum("cij,nj->cni", mats[:, :, :3], means) + mats[:, None, :, 3]  # [C, N, 3]
        z = pc[..., 2]
        safe = torch.where(z > 0, z, torch.ones_like(z))
        intr = torch.tensor([[cameras[i].fx, cameras[i].fy, cameras[i].cx, cameras[i].cy, cameras[i].width,
                              cameras[i].height, limits[i]] for i in chunk], dtype=dtype, device=device)
        u = intr[:, None, 0] * pc[..., 0] / safe + intr[:, None, 2]
        v = intr[:, None, 1] * pc[..., 1] / safe + intr[:, None, 3]
        hit = ((z > 0) & (z < intr[:, None, 6]) & (u >= 0) & (u < intr[:, None, 4]) & (v >= 0)
               & (v < intr[:, None, 5]))
        mask |= hit.any(0)
    return mask

"""Floaters: Gaussians in the free space between a camera and the surfaces it photographed.

A Gaussian hanging in front of the surfaces covers different ground in each photo that sees it, so the
photo loss of one or two photos can grow it to paint whatever those show differently from the others
(exposure, a passing car, a tree seen from another side, sky): a blob or a haze that every other view
then sees in the air. SfM knows where the air is: each point a photo observed lies on a surface, and the
ray from the camera to it crossed nothing. For each training camera a coarse depth map of the surfaces it
observed is made once (the nearest observed point in each cell of ``CELL`` pixels, then the nearest over
the cell's neighbours, so edges of tall objects stay safe; cells with no observation set no limit).
A Gaussian whose mean lies, in some camera's image, nearer than ``fraction`` times that cell's depth is in
that camera's free space: it is removed while the scene is densified and once more before it is written.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from spaceport.stages.train.render import Camera

CELL = 32
"""Pixels per side of a depth-map cell (a camera observes ~1,000-3,000 SfM points: a few per cell)."""
CAMERA_CHUNK = 16


class FreeSpace:
    """Per training camera, the depth below which its view is known to be empty."""

    def __init__(self, cameras: list[Camera], points: np.ndarray, observed: list[np.ndarray],
                 fraction: float) -> None:
        from scipy.ndimage import minimum_filter

        self.cameras = cameras
        self.grids: list[np.ndarray] = []
        for cam, ids in zip(cameras, observed, strict=True):
            rows, cols = -(-cam.height // CELL), -(-cam.width // CELL)
            grid = np.full((rows, cols), np.inf)
            pc = points[ids] @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
            z = pc[:, 2]
            front = z > 0
            u = cam.fx * pc[front, 0] / z[front] + cam.cx
            v = cam.fy * pc[front, 1] / z[front] + cam.cy
            ok = (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
            np.minimum.at(grid, ((v[ok] // CELL).astype(int), (u[ok] // CELL).astype(int)), z[front][ok])
            near = minimum_filter(grid, size=3, mode="nearest")
            self.grids.append(np.where(np.isfinite(near), fraction * near, 0.0))  # 0: no limit where none seen

    @torch.no_grad()
    def mask(self, means: Tensor) -> Tensor:
        """``[N]`` True for Gaussians in some camera's free space."""
        device, dtype = means.device, means.dtype
        hit = torch.zeros(len(means), dtype=torch.bool, device=device)
        for start in range(0, len(self.cameras), CAMERA_CHUNK):
            cams = self.cameras[start:start + CAMERA_CHUNK]
            mats = torch.tensor(np.stack([c.world_to_camera[:3] for c in cams]), dtype=dtype, device=device)
            pc = torch.einsum("cij,nj->cni", mats[:, :, :3], means) + mats[:, None, :, 3]  # [C, N, 3]
            z = pc[..., 2]
            safe = torch.where(z > 0, z, torch.ones_like(z))
            for k, cam in enumerate(cams):
                grid = torch.tensor(self.grids[start + k], dtype=dtype, device=device)
                u = cam.fx * pc[k, :, 0] / safe[k] + cam.cx
                v = cam.fy * pc[k, :, 1] / safe[k] + cam.cy
                inside = (z[k] > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
                row = (v.clamp(0, cam.height - 1) // CELL).long()
                col = (u.clamp(0, cam.width - 1) // CELL).long()
                hit |= inside & (z[k] < grid[row, col])
        return hit

"""Dense initial points from plane-sweep stereo on the training views.

A sparse SfM model leaves most surfaces without points (the demo flight's 40 photos give ~2,400), and
Gaussians cloned from the few there are must travel far to cover the rest, which a short run never
does. This fills the gaps the classic way: for each training view, at low resolution, sweep fronto-
parallel planes through the depth range of its SfM points, warp its nearest neighbour views onto each
plane and keep, per pixel, the depth where the colours agree best (mean absolute difference over a 5x5
window, averaged over the best two neighbours so that an occluded one does not veto). A depth survives
only if its cost is low and another view's depth map agrees with it (within 2%); the survivors are
back-projected with their colour. Held-out views are never used.

Measured on the demo flight (bench/train.py): +0.8 dB held-out PSNR after 1000 steps over random seeds
alone; a few seconds on 2 cores.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from spaceport.stages.train.data import View
from spaceport.stages.train.render import Camera

MAX_WIDTH = 160
"""Stereo runs on images at most this wide (pixels): plenty for seeds, and seconds not minutes."""
NEIGHBOURS = 4
DEPTHS = 32
MAX_COST = 0.06
"""Mean absolute colour difference (0..1) above which a pixel's depth is not trusted."""
AGREEMENT = 0.02
"""Relative depth difference within which two views' depth maps count as agreeing."""


def neighbours(cams: list[Camera], i: int, k: int) -> list[int]:
    """The ``k`` nearest cameras looking roughly the same way as camera ``i`` (within ~45 degrees)."""
    centres = np.stack([c.centre for c in cams])
    axes = np.stack([c.world_to_camera[2, :3] for c in cams])
    score = np.linalg.norm(centres - centres[i], axis=1)
    score[(axes @ axes[i] < 0.7) | (np.arange(len(cams)) == i)] = np.inf
    return [int(j) for j in np.argsort(score)[:k] if np.isfinite(score[j])]


def pixel_rays(cam: Camera) -> torch.Tensor:
    """``[h, w, 3]`` world-space directions through pixel centres, scaled to unit camera depth."""
    ys, xs = torch.meshgrid(torch.arange(cam.height) + 0.5, torch.arange(cam.width) + 0.5, indexing="ij")
    rays = torch.stack([(xs - cam.cx) / cam.fx, (ys - cam.cy) / cam.fy, torch.ones_like(xs)], -1)
    return rays @ torch.tensor(cam.world_to_camera[:3, :3], dtype=torch.float32)  # R^T applied to each ray


def project(cam: Camera, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid coordinates (-1..1, for ``grid_sample``) and camera depth of world ``points [..., 3]``."""
    R = torch.tensor(cam.world_to_camera[:3, :3], dtype=torch.float32)
    t = torch.tensor(cam.world_to_camera[:3, 3], dtype=torch.float32)
    pc = points @ R.T + t
    z = pc[..., 2]
    safe = torch.where(z > 1e-6, z, torch.full_like(z, 1e-6))
    u = (cam.fx * pc[..., 0] / safe + cam.cx) / cam.width * 2 - 1
    v = (cam.fy * pc[..., 1] / safe + cam.cy) / cam.height * 2 - 1
    return torch.stack([u, v], -1), z


def box_mean(x: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Mean over a ``(2 radius + 1)^2`` window of each ``[..., h, w]`` map (edges replicated), by prefix sums."""
    size = 2 * radius + 1
    for dim in (-1, -2):
        pad = [0, 0, 0, 0]
        pad[(-1 - dim) * 2:(-1 - dim) * 2 + 2] = [radius + 1, radius]
        c = F.pad(x[None], pad, mode="replicate")[0].cumsum(dim)
        n = c.shape[dim]
        x = (c.narrow(dim, size, n - size) - c.narrow(dim, 0, n - size)) / size
    return x


def sample(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``image [C, h, w]`` at ``grid [..., 2]`` -> ``[C, ...]`` (zeros outside)."""
    flat = grid.reshape(1, -1, 1, 2)
    out = F.grid_sample(image[None], flat, mode=mode, padding_mode="zeros", align_corners=False)
    return out[0, :, :, 0].reshape(image.shape[0], *grid.shape[:-1])


def depth_range(cam: Camera, sfm_points: np.ndarray) -> tuple[float, float] | None:
    """Depths spanned by the SfM points in front of ``cam`` (1st-99th percentile, widened by 20%)."""
    z = sfm_points @ cam.world_to_camera[2, :3] + cam.world_to_camera[2, 3]
    z = z[z > 0]
    if len(z) < 10:
        return None
    return float(np.percentile(z, 1)) * 0.8, float(np.percentile(z, 99)) * 1.2


def sweep(ref: int, cams: list[Camera], images: list[torch.Tensor],
          sfm_points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Depth ``[h, w]`` and its matching cost for camera ``ref``; None without neighbours or points."""
    near = neighbours(cams, ref, NEIGHBOURS)
    span = depth_range(cams[ref], sfm_points)
    if len(near) < 2 or span is None:
        return None
    depths = 1 / torch.linspace(1 / span[1], 1 / span[0], DEPTHS)  # even steps in inverse depth
    rays = pixel_rays(cams[ref])
    origin = torch.tensor(cams[ref].centre, dtype=torch.float32)
    lowest: torch.Tensor | None = None
    second = torch.empty(0)
    for j in near:
        # the point at depth d on a ray is origin + d ray: in camera j that is a + d b, per pixel
        cam = cams[j]
        R = torch.tensor(cam.world_to_camera[:3, :3], dtype=torch.float32)
        a = origin @ R.T + torch.tensor(cam.world_to_camera[:3, 3], dtype=torch.float32)
        b = rays @ R.T  # [h, w, 3]
        z = a[2] + depths[:, None, None] * b[..., 2]  # [D, h, w]
        inv_z = 1 / torch.where(z > 1e-6, z, torch.full_like(z, 1e-6))
        u = (cam.fx * (a[0] + depths[:, None, None] * b[..., 0]) * inv_z + cam.cx) * (2 / cam.width) - 1
        v = (cam.fy * (a[1] + depths[:, None, None] * b[..., 1]) * inv_z + cam.cy) * (2 / cam.height) - 1
        grid = torch.stack([u, v], -1)
        diff = box_mean((sample(images[j], grid) - images[ref][:, None]).abs().mean(0))  # [D, h, w]
        visible = (u.abs() <= 1) & (v.abs() <= 1) & (z > 0)
        cost = torch.where(visible, diff, torch.ones_like(diff))
        if lowest is None:
            lowest, second = cost, torch.ones_like(cost)
        else:  # the two lowest costs so far, elementwise
            second = torch.minimum(second, torch.maximum(lowest, cost))
            lowest = torch.minimum(lowest, cost)
    assert lowest is not None  # near has at least two cameras
    best, index = ((lowest + second) / 2).min(0)  # [h, w]: the mean of the best two neighbours
    return depths[index], best


def stereo_points(views: list[View], sfm_points: np.ndarray, count: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` coloured points (``[P, 3]`` float64, ``[P, 3]`` float32 in 0..1) from ``views``."""
    if count <= 0 or len(views) < 2:
        return np.empty((0, 3)), np.empty((0, 3), np.float32)
    scale = min(1.0, MAX_WIDTH / max(v.camera.width for v in views))
    cams = [v.camera.scaled(scale) for v in views]
    images = [F.interpolate(v.image.permute(2, 0, 1)[None].float() / 255, size=(c.height, c.width),
                            mode="area")[0] for v, c in zip(views, cams, strict=True)]
    maps = [sweep(i, cams, images, sfm_points) for i in range(len(cams))]
    points, colours = [], []
    for i, found in enumerate(maps):
        if found is None:
            continue
        depth, cost = found
        world = torch.tensor(cams[i].centre, dtype=torch.float32) + depth[..., None] * pixel_rays(cams[i])
        agree = torch.zeros_like(depth, dtype=torch.bool)
        for j in neighbours(cams, i, NEIGHBOURS):
            if maps[j] is None:
                continue
            grid, z = project(cams[j], world)
            theirs = sample(maps[j][0][None], grid, mode="nearest")[0]
            agree |= (theirs - z).abs() < AGREEMENT * z
        keep = (cost < MAX_COST) & agree
        points.append(world[keep].numpy())
        colours.append(images[i].permute(1, 2, 0)[keep].numpy())
    pts = np.concatenate(points) if points else np.empty((0, 3), np.float32)
    cols = np.concatenate(colours) if colours else np.empty((0, 3), np.float32)
    if len(pts) > count:
        pick = np.sort(rng.choice(len(pts), count, replace=False))
        pts, cols = pts[pick], cols[pick]
    return pts.astype(np.float64), cols.astype(np.float32)

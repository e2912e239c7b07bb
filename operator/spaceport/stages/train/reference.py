"""A pure-torch tile compositor: the slow, obviously-correct reference for the compiled kernels.

It bins Gaussians into tiles itself (independently of the kernels), composites each tile with dense
tensor maths and relies on autograd for gradients. Tests compare values and gradients with it in
float64; bench/train.py measures the compiled rasterizer against it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spaceport.stages.train.rasterizer_cpu import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE


def composite_reference(
    means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, radii: Tensor, depths: Tensor,
    width: int, height: int,
) -> tuple[Tensor, Tensor]:
    """Same contract as the compiled compositor: returns ``image [H, W, 3]`` and ``alpha [H, W]``."""
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    live = (radii > 0).all(-1)
    order = torch.argsort(depths.detach(), stable=True)
    order = order[live[order]]
    m = means2d.detach()[order]
    r = radii[order].to(m.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / TILE).clamp(0, tiles_x)
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / TILE).clamp(0, tiles_x)
    y0 = torch.floor((m[:, 1] - r[:, 1]) / TILE).clamp(0, tiles_y)
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / TILE).clamp(0, tiles_y)
    image = torch.zeros(height, width, 3, dtype=means2d.dtype)
    alpha = torch.zeros(height, width, dtype=means2d.dtype)
    image_rows, alpha_rows = [], []
    for ty in range(tiles_y):
        row_img, row_alpha = [], []
        for tx in range(tiles_x):
            hit = (x0 <= tx) & (tx < x1) & (y0 <= ty) & (ty < y1)
            ids = order[hit]
            ys = torch.arange(ty * TILE, min(ty * TILE + TILE, height), dtype=means2d.dtype) + 0.5
            xs = torch.arange(tx * TILE, min(tx * TILE + TILE, width), dtype=means2d.dtype) + 0.5
            py, px = torch.meshgrid(ys, xs, indexing="ij")
            pix = torch.stack([px.reshape(-1), py.reshape(-1)], -1)
            img, alp = _composite_pixels(pix, means2d[ids], conics[ids], colors[ids], opacities[ids])
            row_img.append(img.reshape(len(ys), len(xs), 3))
            row_alpha.append(alp.reshape(len(ys), len(xs)))
        image_rows.append(torch.cat(row_img, 1))
        alpha_rows.append(torch.cat(row_alpha, 1))
    image = torch.cat(image_rows, 0)
    alpha = torch.cat(alpha_rows, 0)
    return image, alpha


def _composite_pixels(pix: Tensor, m: Tensor, con: Tensor, col: Tensor, op: Tensor) -> tuple[Tensor, Tensor]:
    if len(m) == 0:
        return torch.zeros(len(pix), 3, dtype=pix.dtype), torch.zeros(len(pix), dtype=pix.dtype)
    d = pix[:, None, :] - m[None]
    sigma = 0.5 * (con[:, 0] * d[..., 0] ** 2 + con[:, 2] * d[..., 1] ** 2) + con[:, 1] * d[..., 0] * d[..., 1]
    a = torch.clamp_max(op * torch.exp(-sigma), ALPHA_MAX)
    valid = (sigma >= 0) & (a >= ALPHA_MIN)
    a = torch.where(valid, a, torch.zeros_like(a))
    with torch.no_grad():
        t_after = torch.cumprod(1 - a, dim=1)
        stop = valid & (t_after <= T_MIN)
        keep = torch.cumsum(stop.int(), dim=1) == 0
    a = torch.where(keep, a, torch.zeros_like(a))
    one = torch.ones_like(a[:, :1])
    t_before = torch.cumprod(torch.cat([one, 1 - a[:, :-1]], 1), dim=1)
    w = a * t_before
    return w @ col, w.sum(1)

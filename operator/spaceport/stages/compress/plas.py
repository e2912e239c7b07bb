"""PLAS (Parallel Linear Assignment Sorting, arXiv 2312.13299) in torch: same code on CPU and CUDA.

Sorts an HxW grid of C-channel vectors so that neighbours are similar, which is what lets lossless
WebP predict one texel from the next. For a shrinking radius, each texel's target is the grid blurred
over that radius; inside random blocks, groups of 4 texels try all 24 ways of taking each other's
places and keep the one closest to the targets. Only swaps happen, so the result is a permutation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch

from spaceport.splats import GaussianScene
from spaceport.stages.compress.attributes import log_transform, sigmoid

PERMS = torch.tensor(list(itertools.permutations(range(4))), dtype=torch.int64)  # [24, 4]; row 0 = identity
# cost of permutation p = sum_i d[i, PERMS[p, i]]: one matmul of the flattened [4x4] distances with this
PERM_COST = torch.zeros(16, 24)
PERM_COST[torch.arange(4)[None, :] * 4 + PERMS, torch.arange(24)[:, None]] = 1.0


def _box_blur(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a sizexsize window: wrapping in x, mirrored in y (as PLAS does). grid [H, W, C]."""
    h, w, _ = grid.shape
    half = size // 2

    def along(x: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
        n = x.shape[dim]
        if mode == "wrap":
            idx = torch.arange(-half, n + half, device=x.device) % n
        else:
            idx = torch.arange(-half, n + half, device=x.device).abs()
            idx = torch.where(idx >= n, 2 * (n - 1) - idx, idx).clamp(0, n - 1)
        padded = x.index_select(dim, idx)
        c = torch.cumsum(padded, dim)
        zero = torch.zeros_like(c.narrow(dim, 0, 1))
        c = torch.cat([zero, c], dim)
        win = 2 * half + 1
        return (c.narrow(dim, win, n) - c.narrow(dim, 0, n)) / win

    return along(along(grid, 1, "wrap" if w > 1 else "mirror"), 0, "mirror" if h > 1 else "wrap")


def _swap_pass(grid: torch.Tensor, index: torch.Tensor, target: torch.Tensor, block: int,
               gen: torch.Generator) -> tuple[float, float]:
    """One pass over every block after a random offset; changes grid [H·W, C] and index [H·W] in place.

    Returns (cost before, cost after) over the texels visited. Groups of 4 are a random partition of the
    block's positions, shared by all blocks of the pass (the random offset varies them between passes).
    """
    h, w = target.shape[:2]
    c = grid.shape[1]
    dev = grid.device
    dy, dx = (int(torch.randint(0, s, (1,), generator=gen)) for s in (h, w))
    bh, bw = h // block, w // block
    within = torch.randperm(block * block, generator=gen).to(dev)  # [m]
    oy, ox = within // block, within % block
    by = torch.arange(bh, device=dev).repeat_interleave(bw) * block  # [nb]
    bx = torch.arange(bw, device=dev).repeat(bh) * block
    ys = (by[:, None] + oy[None, :] + dy) % h
    xs = (bx[:, None] + ox[None, :] + dx) % w
    pos = (ys * w + xs).reshape(-1, 4)  # [G, 4] flat grid positions, grouped
    x = grid[pos]  # [G, 4, C]
    y = target.reshape(-1, c)[pos]
    d = (x * x).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2 * torch.bmm(x, y.transpose(1, 2))
    cost = d.reshape(-1, 16) @ PERM_COST.to(dev)  # [G, 24]
    best_cost, best = cost.min(1)
    before, after = float(cost[:, 0].sum()), float(best_cost.sum())
    moved = best != 0
    if bool(moved.any()):
        dest = torch.gather(pos[moved], 1, PERMS.to(dev)[best[moved]])  # item i goes to place PERMS[p, i]
        src = pos[moved]
        grid[dest.reshape(-1)] = grid[src.reshape(-1)]
        index[dest.reshape(-1)] = index[src.reshape(-1)]
    return before, after


def plas_sort(
    features: torch.Tensor,
    *,
    seed: int = 0,
    radius_decay: float = 0.9,
    min_improvement: float = 1e-3,
    min_rolls: int = 4,
    max_rolls: int = 8,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Sort a [H, W, C] grid; returns [H, W] indices into the row-major input (a permutation).

    The paper's schedule (radius x0.95, up to convergence) costs ~4x more passes here for a texture a
    few percent smaller; these defaults (x0.9, 4 to 8 rolls per radius) keep PLAS within a few times
    the WebP encoding time on CPU.
    """
    h, w, _ = features.shape
    grid = features.reshape(h * w, -1).clone().float()
    index = torch.arange(h * w, device=features.device)
    if h < 2 or w < 2:
        return index.reshape(h, w)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    side = max(h, w)
    radius = side / 2 - 1
    radii = []
    while radius >= 1:
        radii.append(radius)
        radius *= radius_decay
    for step, r in enumerate(radii):
        size = min(side - 1, 2 * int(r) + 1)
        target = _box_blur(grid.reshape(h, w, -1), size)
        block = max(16, min(size + 1, side))
        block = min(block - block % 2, h - h % 2, w - w % 2)
        if block < 2:
            break
        for roll in range(max_rolls):
            before, after = _swap_pass(grid, index, target, block, gen)
            if roll + 1 >= min_rolls and (before <= 0 or (before - after) / before < min_improvement):
                break
        if progress:
            progress((step + 1) / len(radii))
    return index.reshape(h, w)


def grid_shape(n: int, width: int) -> tuple[int, int]:
    """Full rows of ``width`` that ``n`` splats fill (PLAS sorts those; the rest follow in order)."""
    return n // width, width


def plas_order(features: torch.Tensor, start: torch.Tensor, width: int, **kwargs: object) -> torch.Tensor:
    """Reorder ``start`` (a permutation of rows of ``features`` [N, C]) with PLAS on full rows of ``width``.

    Channels are standardised first so no attribute dominates the distance.
    """
    n = len(start)
    rows, _ = grid_shape(n, width)
    if rows < 2:
        return start
    f = features[start]
    f = (f - f.mean(0)) / f.std(0).clamp_min(1e-8)
    body = rows * width
    idx = plas_sort(f[:body].reshape(rows, width, -1), **kwargs).reshape(-1)  # type: ignore[arg-type]
    return torch.cat([start[:body][idx], start[body:]])


def plas_square_side(n: int) -> int:
    return math.isqrt(n)


def sort_features(scene: GaussianScene) -> torch.Tensor:
    """What PLAS makes smooth: the stored quantities (log-means, log-scales, colour, linear opacity)."""
    f = np.concatenate([log_transform(scene.means) * 2.0, scene.scales, scene.sh0,
                        sigmoid(scene.opacities)[:, None]], axis=1)
    return torch.from_numpy(f.astype(np.float32))

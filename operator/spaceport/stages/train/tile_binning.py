"""Tile binning for the CPU compositor: which Gaussians touch which 16x16 tile, front to back.

A Gaussian is binned into the tiles its ``alpha >= 1/255`` ellipse touches (often much smaller than the
3-sigma box of its radii: faint Gaussians), and each tile's list is in depth order. Serial apart from
the per-Gaussian extents; ~1.3 ms for 20k Gaussians at 256x256 on 2 cores.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

TILE = 16
ALPHA_MIN = 1.0 / 255.0
MARGIN = 1e-3
"""Pixels added around each ellipse's extent so that rounding never drops one the per-lane test keeps."""


@njit(cache=True)
def ellipse_extent(qa: float, qb: float, qc: float, thr: float) -> tuple[float, float]:
    """Half-width and half-height (pixels) of ``{sigma <= thr}``: where ``alpha >= 1/255`` can hold.

    For the conic ``Q`` that set is the ellipse ``d^T Q d <= 2 thr``, whose extent along x is
    ``sqrt(2 thr (Q^-1)_xx)`` with ``(Q^-1)_xx = c / det``. Negative when nothing can be drawn.
    """
    det = qa * qc - qb * qb
    if thr <= 0.0 or det <= 0.0 or qa <= 0.0:
        return -1.0, -1.0
    return np.sqrt(2.0 * thr * qc / det) + MARGIN, np.sqrt(2.0 * thr * qa / det) + MARGIN


@njit(cache=True)
def skip_threshold(opacity: float) -> float:
    """``log(255 * opacity)``: ``alpha < 1/255`` exactly when ``sigma`` exceeds it (-inf if transparent)."""
    return np.log(opacity / ALPHA_MIN) if opacity > 0 else -np.inf


@njit(parallel=True, cache=True)
def skip_thresholds(opacities: np.ndarray) -> np.ndarray:
    """:func:`skip_threshold` of every Gaussian (float64), computed once per view for binning and both
    compositing passes, which would otherwise each take a logarithm per tile intersection."""
    out = np.empty(opacities.shape[0])
    for g in prange(opacities.shape[0]):
        out[g] = skip_threshold(float(opacities[g]))
    return out


def bin_tiles(
    means2d: np.ndarray, conics: np.ndarray, thresholds: np.ndarray, radii: np.ndarray, depths: np.ndarray,
    width: int, height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sort Gaussians into the tiles their ``alpha >= 1/255`` ellipse touches, front to back per tile.

    ``radii`` is ``[N, 2]`` int (0 means culled by the projection). Returns ``tile_offsets``
    (``[tiles + 1]``: the range of tile ``t`` is ``offsets[t]:offsets[t+1]``) and ``flat_ids``.
    The ellipse is often much smaller than the 3-sigma box of ``radii`` (faint Gaussians), which saves
    intersections; pixels outside it contribute nothing, so the image is the same.
    """
    rect = tile_rects(means2d, conics, thresholds, radii, width, height)
    drawn = np.flatnonzero(rect[:, 1] > rect[:, 0])
    keys = np.ascontiguousarray(depths[drawn])  # > 0 (behind the near plane is culled): bits sort as the values
    order = drawn[radix_argsort(keys.view(np.uint32 if keys.itemsize == 4 else np.uint64))]
    return fill_tiles(rect, order, (width + TILE - 1) // TILE, (height + TILE - 1) // TILE)


@njit(parallel=True, cache=True)
def tile_rects(means2d: np.ndarray, conics: np.ndarray, thresholds: np.ndarray, radii: np.ndarray, width: int,
               height: int) -> np.ndarray:
    """``[N, 4]`` tile ranges ``x0, x1, y0, y1`` (end-exclusive) of each Gaussian's ellipse; empty if culled."""
    n = means2d.shape[0]
    rect = np.zeros((n, 4), np.int32)
    for g in prange(n):
        if radii[g, 0] <= 0 or radii[g, 1] <= 0:
            continue
        ex, ey = ellipse_extent(float(conics[g, 0]), float(conics[g, 1]), float(conics[g, 2]), thresholds[g])
        if ex < 0:
            continue
        mx, my = float(means2d[g, 0]) - 0.5, float(means2d[g, 1]) - 0.5  # pixel px's centre is px + 0.5
        px0, px1 = max(0, int(np.ceil(mx - ex))), min(width - 1, int(np.floor(mx + ex)))
        py0, py1 = max(0, int(np.ceil(my - ey))), min(height - 1, int(np.floor(my + ey)))
        if px0 > px1 or py0 > py1:
            continue
        rect[g, 0] = px0 // TILE
        rect[g, 1] = px1 // TILE + 1
        rect[g, 2] = py0 // TILE
        rect[g, 3] = py1 // TILE + 1
    return rect


@njit(cache=True)
def radix_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of unsigned integer keys: LSD radix, 8 bits a pass, passes where all keys share the
    digit skipped. ~5x faster than numpy's argsort for the depths of 50k Gaussians; stable, so equal
    depths keep index order and runs are repeatable."""
    n = keys.shape[0]
    order = np.arange(n).astype(np.int64)
    spare = np.empty(n, np.int64)
    for shift in range(0, keys.itemsize * 8, 8):
        counts = np.zeros(257, np.int64)
        for i in range(n):
            counts[((keys[i] >> shift) & 255) + 1] += 1
        if counts.max() == n:
            continue
        starts = np.cumsum(counts)
        for i in range(n):
            g = order[i]
            d = (keys[g] >> shift) & 255
            spare[starts[d]] = g
            starts[d] += 1
        order, spare = spare, order
    return order


@njit(cache=True)
def fill_tiles(rect: np.ndarray, order: np.ndarray, tiles_x: int, tiles_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile offsets and each tile's Gaussians in the given (front-to-back) order: a counting sort."""
    counts = np.zeros(tiles_x * tiles_y + 1, np.int64)
    for g in order:
        for ty in range(rect[g, 2], rect[g, 3]):
            for tx in range(rect[g, 0], rect[g, 1]):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    flat_ids = np.empty(offsets[-1], np.int32)
    for g in order:
        for ty in range(rect[g, 2], rect[g, 3]):
            for tx in range(rect[g, 0], rect[g, 1]):
                t = ty * tiles_x + tx
                flat_ids[fill[t]] = g
                fill[t] += 1
    return offsets, flat_ids

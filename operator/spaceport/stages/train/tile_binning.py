"""Tile binning for the CPU compositor: which Gaussians touch which 16x16 tile, front to back.

A Gaussian is binned into the tiles its ``alpha >= 1/255`` ellipse touches (often much smaller than the
3-sigma box of its radii: faint Gaussians), and each tile's list is in depth order. Parallel apart
from the radix sort; ~1.2-1.6 ms for 20k Gaussians at 256x256 on 2 cores.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

TILE_BITS = 4
TILE = 1 << TILE_BITS
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


def bin_tiles(
    means2d: np.ndarray, conics: np.ndarray, opacities: np.ndarray, radii: np.ndarray, depths: np.ndarray,
    width: int, height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort Gaussians into the tiles their ``alpha >= 1/255`` ellipse touches, front to back per tile.

    ``radii`` is ``[N, 2]`` int (0 means culled by the projection). Returns ``tile_offsets``
    (``[tiles + 1]``: the range of tile ``t`` is ``offsets[t]:offsets[t+1]``), ``flat_ids`` and the
    :func:`pixel_boxes`, which the compositor reads instead of working the ellipse out again per tile.
    The ellipse is often much smaller than the 3-sigma box of ``radii`` (faint Gaussians), which saves
    intersections; pixels outside it contribute nothing, so the image is the same.
    """
    boxes = pixel_boxes(means2d, conics, opacities, radii, width, height)
    drawn = np.flatnonzero(boxes[:, 1] >= boxes[:, 0])
    keys = np.ascontiguousarray(depths[drawn])  # > 0 (behind the near plane is culled): bits sort as the values
    order = drawn[radix_argsort(keys.view(np.uint32 if keys.itemsize == 4 else np.uint64))]
    offsets, flat_ids = fill_tiles(boxes, order, (width + TILE - 1) // TILE, (height + TILE - 1) // TILE)
    return offsets, flat_ids, boxes


@njit(parallel=True, cache=True)
def pixel_boxes(means2d: np.ndarray, conics: np.ndarray, opacities: np.ndarray, radii: np.ndarray, width: int,
                height: int) -> np.ndarray:
    """``[N, 4]`` pixels ``x0, x1, y0, y1`` (inclusive, inside the image) that each Gaussian's ellipse
    reaches; ``x1 < x0`` when it reaches none or was culled."""
    n = means2d.shape[0]
    boxes = np.zeros((n, 4), np.int32)
    for g in prange(n):
        boxes[g, 1] = -1
        if radii[g, 0] <= 0 or radii[g, 1] <= 0:
            continue
        ex, ey = ellipse_extent(float(conics[g, 0]), float(conics[g, 1]), float(conics[g, 2]),
                                skip_threshold(float(opacities[g])))
        if ex < 0:
            continue
        mx, my = float(means2d[g, 0]) - 0.5, float(means2d[g, 1]) - 0.5  # pixel px's centre is px + 0.5
        px0, px1 = max(0, int(np.ceil(mx - ex))), min(width - 1, int(np.floor(mx + ex)))
        py0, py1 = max(0, int(np.ceil(my - ey))), min(height - 1, int(np.floor(my + ey)))
        if px0 > px1 or py0 > py1:
            continue
        boxes[g, 0], boxes[g, 1], boxes[g, 2], boxes[g, 3] = px0, px1, py0, py1
    return boxes


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


FILL_PARTS = 8
"""Runs of the depth order that :func:`fill_tiles` counts and places in parallel (any number gives the
same lists: a tile's list is its entries from each run in turn, which is depth order)."""


@njit(parallel=True, cache=True)
def fill_tiles(boxes: np.ndarray, order: np.ndarray, tiles_x: int, tiles_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile offsets and each tile's Gaussians in the given (front-to-back) order: a counting sort over the
    tile ranges of the pixel ``boxes`` (``TILE`` is a power of two and boxes are inside the image, so a
    shift divides), split into runs of ``order`` that are counted and placed in parallel."""
    n, n_tiles = order.shape[0], tiles_x * tiles_y
    rect = np.empty((n, 4), np.int32)  # tile ranges in ``order``, read in sequence by the second pass
    counts = np.zeros((FILL_PARTS, n_tiles), np.int64)
    for part in prange(FILL_PARTS):
        for i in range(part * n // FILL_PARTS, (part + 1) * n // FILL_PARTS):
            g = order[i]
            rect[i, 0], rect[i, 1] = boxes[g, 0] >> TILE_BITS, (boxes[g, 1] >> TILE_BITS) + 1
            rect[i, 2], rect[i, 3] = boxes[g, 2] >> TILE_BITS, (boxes[g, 3] >> TILE_BITS) + 1
            for ty in range(rect[i, 2], rect[i, 3]):
                for tx in range(rect[i, 0], rect[i, 1]):
                    counts[part, ty * tiles_x + tx] += 1
    offsets = np.empty(n_tiles + 1, np.int64)
    starts = np.empty((FILL_PARTS, n_tiles), np.int64)  # where each run's entries of a tile begin
    total = 0
    for t in range(n_tiles):
        offsets[t] = total
        for part in range(FILL_PARTS):
            starts[part, t] = total
            total += counts[part, t]
    offsets[n_tiles] = total
    flat_ids = np.empty(total, np.int32)
    for part in prange(FILL_PARTS):
        fill = starts[part]
        for i in range(part * n // FILL_PARTS, (part + 1) * n // FILL_PARTS):
            g = np.int32(order[i])
            for ty in range(rect[i, 2], rect[i, 3]):
                for tx in range(rect[i, 0], rect[i, 1]):
                    t = ty * tiles_x + tx
                    flat_ids[fill[t]] = g
                    fill[t] += 1
    return offsets, flat_ids

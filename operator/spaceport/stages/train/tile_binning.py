"""Tile binning for the CPU compositor: which Gaussians touch which 16x16 tile, front to back.

A Gaussian is binned into the tiles its ``alpha >= 1/255`` ellipse touches (often much smaller than the
3-sigma box of its radii: faint Gaussians), and each tile's list is in depth order, with the rows of
each half-tile the ellipse reaches. Parallel apart from the radix sort; ~2 ms for 20k Gaussians at
256x256 on 2 cores (AMD Zen 3; the row spans added ~0.7 ms there, and saved more in the compositor).
"""

from __future__ import annotations

from typing import NamedTuple

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


class TileBins(NamedTuple):
    """What :func:`bin_tiles` returns: the tile lists and where in each tile each Gaussian is drawn."""

    offsets: np.ndarray
    """``[tiles + 1]`` int64: the list of tile ``t`` is ``flat_ids[offsets[t]:offsets[t + 1]]``."""
    flat_ids: np.ndarray
    """``[I]`` int32 Gaussian indices, each tile's front to back."""
    spans: np.ndarray
    """``[I, 4]`` int8 rows of the tile, ``[s0, s1)`` in its left half (8 columns) and ``[s2, s3)`` in its
    right half, in which the Gaussian's ellipse reaches a pixel centre (``s1 <= s0`` when it misses the
    half): the rows the compositor computes."""
    boxes: np.ndarray
    """``[N, 4]`` int32 :func:`pixel_boxes`."""


def bin_tiles(
    means2d: np.ndarray, conics: np.ndarray, opacities: np.ndarray, radii: np.ndarray, depths: np.ndarray,
    width: int, height: int,
) -> TileBins:
    """Sort Gaussians into the tiles their ``alpha >= 1/255`` ellipse touches, front to back per tile.

    ``radii`` is ``[N, 2]`` int (0 means culled by the projection). The ellipse is often much smaller than
    the 3-sigma box of ``radii`` (faint Gaussians), which saves intersections, and in each half-tile a
    tilted or elongated one reaches fewer rows than its box (a quarter fewer pixels to compute in the
    demo's views); pixels outside it contribute nothing, so the image is the same.
    """
    boxes, reach = pixel_boxes(means2d, conics, opacities, radii, width, height)
    drawn = np.flatnonzero(boxes[:, 1] >= boxes[:, 0])
    keys = np.ascontiguousarray(depths[drawn])  # > 0 (behind the near plane is culled): bits sort as the values
    order = drawn[radix_argsort(keys.view(np.uint32 if keys.itemsize == 4 else np.uint64))]
    offsets, flat_ids, spans = fill_tiles(boxes, means2d, conics, reach, order, (width + TILE - 1) // TILE,
                                          (height + TILE - 1) // TILE)
    return TileBins(offsets, flat_ids, spans, boxes)


@njit(parallel=True, cache=True)
def pixel_boxes(means2d: np.ndarray, conics: np.ndarray, opacities: np.ndarray, radii: np.ndarray, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 4]`` pixels ``x0, x1, y0, y1`` (inclusive, inside the image) that each Gaussian's ellipse
    reaches, ``x1 < x0`` when it reaches none or was culled; and ``[N, 2]`` its :func:`skip_threshold` and
    the ellipse's half-height (set where it has a box), which :func:`fill_tiles` needs again (a ``log`` and
    a ``sqrt`` a Gaussian: 0.1 ms of its ~0.8 at 20k Gaussians)."""
    n = means2d.shape[0]
    boxes = np.zeros((n, 4), np.int32)
    reach = np.empty((n, 2), np.float64)
    for g in prange(n):
        boxes[g, 1] = -1
        if radii[g, 0] <= 0 or radii[g, 1] <= 0:
            continue
        thr = skip_threshold(float(opacities[g]))
        ex, ey = ellipse_extent(float(conics[g, 0]), float(conics[g, 1]), float(conics[g, 2]), thr)
        reach[g, 0], reach[g, 1] = thr, ey - MARGIN
        if ex < 0:
            continue
        mx, my = float(means2d[g, 0]) - 0.5, float(means2d[g, 1]) - 0.5  # pixel px's centre is px + 0.5
        px0, px1 = max(0, int(np.ceil(mx - ex))), min(width - 1, int(np.floor(mx + ex)))
        py0, py1 = max(0, int(np.ceil(my - ey))), min(height - 1, int(np.floor(my + ey)))
        if px0 > px1 or py0 > py1:
            continue
        boxes[g, 0], boxes[g, 1], boxes[g, 2], boxes[g, 3] = px0, px1, py0, py1
    return boxes, reach


@njit(cache=True)
def ellipse_rows(xt: float, c_thr2: float, det: float, b_c: float, inv_c: float, dx0: float, dx1: float,
                 dy0: float, r0: int, r1: int) -> tuple[int, int]:
    """Of the rows ``[r0, r1)`` (of a Gaussian's box), those ``[s0, s1)`` whose pixel centres at
    ``dy = r + dy0`` (offset from the mean) can lie in its ellipse ``{sigma <= thr}`` somewhere in the
    column strip ``dx0 <= dx <= dx1``; ``s0 >= s1`` when the strip misses it. The ellipse of the conic
    ``(a, b, c)`` comes as ``xt`` (x offset of its topmost point from the mean; the bottommost is at
    ``-xt``), ``2 c thr``, ``det = a c - b^2``, ``b / c`` and ``1 / c``.

    At a given ``dx`` the ellipse spans ``dy = (-b dx +- sqrt(2 c thr - det dx^2)) / c``; the upper end is
    concave in ``dx`` and greatest at the topmost point, so over the strip it peaks at the strip's ``dx``
    nearest to ``xt`` (the lower end likewise at the one nearest to ``-xt``). The ends are widened by
    ``MARGIN`` as the boxes are, so that rounding never drops a row the per-pixel test keeps. Branch-free
    (~10% faster here), and scalars rather than an array: an array passed per call costs reference counting
    that two threads contend for (3x slower).
    """
    x_top, x_bottom = min(max(xt, dx0), dx1), min(max(-xt, dx0), dx1)
    d_top, d_bottom = c_thr2 - det * x_top * x_top, c_thr2 - det * x_bottom * x_bottom
    top = np.sqrt(max(d_top, 0.0)) * inv_c - b_c * x_top
    bottom = -np.sqrt(max(d_bottom, 0.0)) * inv_c - b_c * x_bottom
    s0 = max(r0, int(np.ceil(bottom - dy0 - MARGIN)))
    s1 = min(r1, int(np.floor(top - dy0 + MARGIN)) + 1)
    return s0, s1 if d_top >= 0.0 else s0  # d_top < 0: the strip misses the ellipse


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
def fill_tiles(boxes: np.ndarray, means2d: np.ndarray, conics: np.ndarray, reach: np.ndarray, order: np.ndarray,
               tiles_x: int, tiles_y: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile offsets, each tile's Gaussians in the given (front-to-back) order and their :attr:`TileBins.spans`:
    a counting sort over the tile ranges of the pixel ``boxes`` (``TILE`` is a power of two and boxes are
    inside the image, so a shift divides), split into runs of ``order`` that are counted and placed in
    parallel. Each Gaussian's rows are worked out once per half-tile column (from its conic and the ``reach``
    of :func:`pixel_boxes`) and clipped to each tile."""
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
    spans = np.empty((total, 4), np.int8)  # 0..16: a quarter of the memory of int32 (fewer page faults)
    half = TILE // 2
    for part in prange(FILL_PARTS):
        fill = starts[part]
        rows = np.empty(4, np.int64)  # the Gaussian's rows (of the image) in the two halves of a tile column
        for i in range(part * n // FILL_PARTS, (part + 1) * n // FILL_PARTS):
            g = np.int32(order[i])
            mx, my = float(means2d[g, 0]), float(means2d[g, 1])
            r0, r1 = boxes[g, 2], boxes[g, 3] + 1
            qa, qb, qc = float(conics[g, 0]), float(conics[g, 1]), float(conics[g, 2])
            thr = reach[g, 0]
            det = qa * qc - qb * qb  # > 0, as are a and c: pixel_boxes gave no box otherwise
            # the topmost point, where sigma's gradient points along y (a x + b y = 0), at the box's half-height
            xt = -qb / qa * reach[g, 1]
            c_thr2, b_c, inv_c = 2.0 * qc * thr, qb / qc, 1.0 / qc
            for tx in range(rect[i, 0], rect[i, 1]):
                for h in range(2):
                    x0 = tx * TILE + h * half
                    if boxes[g, 0] < x0 + half and boxes[g, 1] >= x0:
                        dx0 = x0 + 0.5 - mx  # dx of the half's first and last pixel centres
                        rows[2 * h], rows[2 * h + 1] = ellipse_rows(xt, c_thr2, det, b_c, inv_c, dx0,
                                                                    dx0 + (half - 1), 0.5 - my, r0, r1)
                    else:
                        rows[2 * h], rows[2 * h + 1] = r0, r0
                for ty in range(rect[i, 2], rect[i, 3]):
                    t = ty * tiles_x + tx
                    k = fill[t]
                    flat_ids[k] = g
                    y0 = ty * TILE
                    for c in range(4):
                        spans[k, c] = min(max(rows[c], y0), y0 + TILE) - y0
                    fill[t] += 1
    return offsets, flat_ids, spans

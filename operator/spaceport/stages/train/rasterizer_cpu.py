"""Compiled CPU kernels for 3DGS alpha compositing: tile binning, forward and backward.

Conventions follow gsplat's rasterizer so that the CPU and CUDA paths train the same model:
16-pixel tiles, pixel centres at ``+0.5``, ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` with the conic
``(a, b, c)``, ``alpha = min(0.999, opacity * exp(-sigma))``, contributions with ``alpha < 1/255`` or
``sigma < 0`` skipped, and a pixel stops before the Gaussian that would bring its transmittance to
``<= 1e-4``.

The kernels are generic over float32/float64 (the tests check float64 gradients against a brute-force
reference), so constants are typed from the input arrays rather than written as Python floats, which
would silently promote float32 maths to float64.

Parallelism is over tiles. The backward pass writes one gradient row per (tile, Gaussian) intersection,
which only the thread owning that tile touches; a serial pass then sums rows per Gaussian in a fixed
order. That keeps the result free of races and bit-identical from run to run (resume relies on it).
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    # OpenMP's worker threads spin after each parallel region and starve torch's ops running in between;
    # the workqueue layer sleeps instead (measured 2x faster full steps on a busy 2-core machine)
    numba.config.THREADING_LAYER = "workqueue"

TILE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
GRAD_COLS = 9
"""Per-intersection gradient row: mean2d x, y; conic a, b, c; colour r, g, b; opacity."""


@njit(cache=True)
def bin_tiles(
    means2d: np.ndarray, radii: np.ndarray, depths: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sort Gaussians into tiles, front to back within each tile.

    ``radii`` is ``[N, 2]`` int (x and y pixel radius; 0 means culled). Returns ``tile_offsets``
    (``[tiles + 1]``: the range of tile ``t`` is ``offsets[t]:offsets[t+1]``) and ``flat_ids``.
    """
    tiles_x = (width + TILE - 1) // TILE
    tiles_y = (height + TILE - 1) // TILE
    n = means2d.shape[0]
    order = np.argsort(depths)
    rect = np.zeros((n, 4), np.int32)
    counts = np.zeros(tiles_x * tiles_y + 1, np.int64)
    for g in range(n):
        rx = radii[g, 0]
        ry = radii[g, 1]
        if rx <= 0 or ry <= 0:
            continue
        x0 = int(np.floor((means2d[g, 0] - rx) / TILE))
        x1 = int(np.ceil((means2d[g, 0] + rx) / TILE))
        y0 = int(np.floor((means2d[g, 1] - ry) / TILE))
        y1 = int(np.ceil((means2d[g, 1] + ry) / TILE))
        x0 = min(max(x0, 0), tiles_x)
        x1 = min(max(x1, 0), tiles_x)
        y0 = min(max(y0, 0), tiles_y)
        y1 = min(max(y1, 0), tiles_y)
        rect[g, 0] = x0
        rect[g, 1] = x1
        rect[g, 2] = y0
        rect[g, 3] = y1
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    flat_ids = np.empty(offsets[-1], np.int32)
    for i in range(n):
        g = order[i]
        for ty in range(rect[g, 2], rect[g, 3]):
            for tx in range(rect[g, 0], rect[g, 1]):
                t = ty * tiles_x + tx
                flat_ids[fill[t]] = g
                fill[t] += 1
    return offsets, flat_ids


@njit(cache=True)
def gather_tile(
    means2d: np.ndarray, conics: np.ndarray, colors: np.ndarray, opacities: np.ndarray, flat_ids: np.ndarray,
    start: int, end: int,
) -> np.ndarray:
    """Pack one tile's Gaussians contiguously (front to back): x, y, a, b, c, opacity, r, g, b, skip.

    ``skip`` is ``log(255 * opacity)``: ``alpha < 1/255`` exactly when ``sigma > skip``, which lets the
    inner loop reject most pairs without evaluating ``exp``.
    """
    out = np.empty((end - start, 10), opacities.dtype)
    for k in range(start, end):
        g = flat_ids[k]
        row = out[k - start]
        row[0] = means2d[g, 0]
        row[1] = means2d[g, 1]
        row[2] = conics[g, 0]
        row[3] = conics[g, 1]
        row[4] = conics[g, 2]
        row[5] = opacities[g]
        row[6] = colors[g, 0]
        row[7] = colors[g, 1]
        row[8] = colors[g, 2]
        row[9] = np.log(opacities[g] / opacities.dtype.type(ALPHA_MIN)) if opacities[g] > 0 else -np.inf
    return out


@njit(cache=True)
def pixel_box(mx: float, my: float, rx: int, ry: int, x0: int, x1: int, y0: int, y1: int) -> tuple[int, int, int, int]:
    """Pixels of the tile ``[x0, x1) x [y0, y1)`` whose centres lie within the Gaussian's radii.

    Outside them ``sigma > 0.5 * 3.33^2`` (the radius bounds the marginal standard deviation), so
    ``alpha < opacity * 0.00392 < 1/255``: skipping them changes nothing, only saves work.
    """
    bx0 = max(x0, int(np.ceil(mx - rx - 0.5)))
    bx1 = min(x1, int(np.floor(mx + rx - 0.5)) + 1)
    by0 = max(y0, int(np.ceil(my - ry - 0.5)))
    by1 = min(y1, int(np.floor(my + ry - 0.5)) + 1)
    return bx0, bx1, by0, by1


@njit(cache=True)
def row_span(mx: float, dy: float, qa: float, qb: float, qc: float, thr: float, bx0: int, bx1: int) -> tuple[int, int]:
    """Pixels of one row where ``sigma <= thr`` (the only ones that can reach alpha >= 1/255).

    Solves ``0.5 qa dx^2 + qb dy dx + 0.5 qc dy^2 - thr <= 0`` for dx in float64, widened by 1e-3 px so
    rounding never drops a pixel; the per-pixel test still decides, so results are unchanged.
    """
    B = qb * dy
    C = 0.5 * qc * dy * dy - thr
    D = B * B - 2.0 * qa * C
    if D < 0.0 or qa <= 0.0:
        return bx0, bx0 if qa > 0.0 else bx1
    sq = np.sqrt(D)
    lo = int(np.ceil(mx + (-B - sq) / qa - 0.5 - 1e-3))
    hi = int(np.floor(mx + (-B + sq) / qa - 0.5 + 1e-3)) + 1
    return max(bx0, lo), min(bx1, hi)


@njit(cache=True)
def spread(i: int, n: int) -> int:
    """Tile for the ``i``-th iteration of a ``prange`` over ``n`` tiles: the even tiles, then the odd ones.

    numba hands each thread one contiguous block of iterations; in image order one thread would get the
    top half and the other the bottom, and in an aerial view those differ a lot in work (buildings near
    the camera vs distant ground). Interleaved, each thread gets every other tile of the whole image.
    """
    half = (n + 1) // 2
    return 2 * i if i < half else 2 * (i - half) + 1


@njit(parallel=True, cache=True)
def composite_forward(
    means2d: np.ndarray,
    conics: np.ndarray,
    colors: np.ndarray,
    opacities: np.ndarray,
    radii: np.ndarray,
    offsets: np.ndarray,
    flat_ids: np.ndarray,
    width: int,
    height: int,
    image: np.ndarray,
    alpha: np.ndarray,
    last: np.ndarray,
) -> None:
    """Fill ``image [H, W, 3]``, ``alpha [H, W]`` and ``last [H, W]`` (end of each pixel's run).

    Gaussians are the outer loop (front to back) and each visits only the pixels of its box; per-pixel
    transmittance lives in small tile-local arrays.
    """
    tiles_x = (width + TILE - 1) // TILE
    n_tiles = offsets.shape[0] - 1
    one = opacities.dtype.type(1.0)
    half = opacities.dtype.type(0.5)
    ftype = opacities.dtype.type  # int + float32 would promote to float64: convert pixel indices explicitly
    amin = opacities.dtype.type(ALPHA_MIN)
    amax = opacities.dtype.type(ALPHA_MAX)
    tmin = opacities.dtype.type(T_MIN)
    for i in prange(n_tiles):
        t = spread(i, n_tiles)
        start = offsets[t]
        end = offsets[t + 1]
        ty = t // tiles_x
        tx = t - ty * tiles_x
        x0 = tx * TILE
        y0 = ty * TILE
        x1 = min(x0 + TILE, width)
        y1 = min(y0 + TILE, height)
        p = gather_tile(means2d, conics, colors, opacities, flat_ids, start, end)
        trans = np.ones((TILE, TILE), opacities.dtype)
        rgb = np.zeros((TILE, TILE, 3), opacities.dtype)
        stop = np.zeros((TILE, TILE), np.int64)
        done = np.zeros((TILE, TILE), np.bool_)
        remaining = (x1 - x0) * (y1 - y0)
        for k in range(end - start):
            g = flat_ids[start + k]
            bx0, bx1, by0, by1 = pixel_box(p[k, 0], p[k, 1], radii[g, 0], radii[g, 1], x0, x1, y0, y1)
            thr = p[k, 9]
            if thr <= 0:
                continue
            for py in range(by0, by1):
                dy = ftype(py) + half - p[k, 1]
                ly = py - y0
                rx0, rx1 = row_span(float(p[k, 0]), float(dy), float(p[k, 2]), float(p[k, 3]), float(p[k, 4]),
                                    float(thr), bx0, bx1)
                for px in range(rx0, rx1):
                    lx = px - x0
                    if done[ly, lx]:
                        continue
                    dx = ftype(px) + half - p[k, 0]
                    sigma = half * (p[k, 2] * dx * dx + p[k, 4] * dy * dy) + p[k, 3] * dx * dy
                    if sigma < 0 or sigma > p[k, 9]:
                        continue
                    a = min(amax, p[k, 5] * np.exp(-sigma))
                    if a < amin:
                        continue
                    next_t = trans[ly, lx] * (one - a)
                    if next_t <= tmin:
                        done[ly, lx] = True
                        remaining -= 1
                        continue
                    w = a * trans[ly, lx]
                    rgb[ly, lx, 0] += w * p[k, 6]
                    rgb[ly, lx, 1] += w * p[k, 7]
                    rgb[ly, lx, 2] += w * p[k, 8]
                    trans[ly, lx] = next_t
                    stop[ly, lx] = k + 1
            if remaining == 0:
                break
        for py in range(y0, y1):
            for px in range(x0, x1):
                image[py, px, 0] = rgb[py - y0, px - x0, 0]
                image[py, px, 1] = rgb[py - y0, px - x0, 1]
                image[py, px, 2] = rgb[py - y0, px - x0, 2]
                alpha[py, px] = one - trans[py - y0, px - x0]
                last[py, px] = start + stop[py - y0, px - x0]


@njit(parallel=True, cache=True)
def composite_backward(
    means2d: np.ndarray,
    conics: np.ndarray,
    colors: np.ndarray,
    opacities: np.ndarray,
    radii: np.ndarray,
    offsets: np.ndarray,
    flat_ids: np.ndarray,
    width: int,
    height: int,
    alpha: np.ndarray,
    last: np.ndarray,
    v_image: np.ndarray,
    v_alpha: np.ndarray,
    rows: np.ndarray,
) -> None:
    """Per-intersection gradients into ``rows [I, 9]`` (each row written once, by its tile's thread)."""
    tiles_x = (width + TILE - 1) // TILE
    n_tiles = offsets.shape[0] - 1
    one = opacities.dtype.type(1.0)
    zero = opacities.dtype.type(0.0)
    half = opacities.dtype.type(0.5)
    ftype = opacities.dtype.type  # int + float32 would promote to float64: convert pixel indices explicitly
    amin = opacities.dtype.type(ALPHA_MIN)
    amax = opacities.dtype.type(ALPHA_MAX)
    for i in prange(n_tiles):
        t = spread(i, n_tiles)
        start = offsets[t]
        ty = t // tiles_x
        tx = t - ty * tiles_x
        x0 = tx * TILE
        y0 = ty * TILE
        x1 = min(x0 + TILE, width)
        y1 = min(y0 + TILE, height)
        p = gather_tile(means2d, conics, colors, opacities, flat_ids, start, offsets[t + 1])
        trans = np.empty((TILE, TILE), opacities.dtype)
        t_final = np.empty((TILE, TILE), opacities.dtype)
        behind = np.zeros((TILE, TILE, 3), opacities.dtype)  # colour composited behind the current Gaussian
        stop = np.zeros((TILE, TILE), np.int64)
        n_max = 0
        for py in range(y0, y1):
            for px in range(x0, x1):
                t_final[py - y0, px - x0] = one - alpha[py, px]
                trans[py - y0, px - x0] = one - alpha[py, px]
                stop[py - y0, px - x0] = last[py, px] - start
                n_max = max(n_max, last[py, px] - start)
        for k in range(n_max - 1, -1, -1):
            g = flat_ids[start + k]
            ca = p[k, 2]
            cb = p[k, 3]
            cc = p[k, 4]
            op = p[k, 5]
            cr = p[k, 6]
            cg = p[k, 7]
            cbl = p[k, 8]
            g0 = zero
            g1 = zero
            g2 = zero
            g3 = zero
            g4 = zero
            g5 = zero
            g6 = zero
            g7 = zero
            g8 = zero
            bx0, bx1, by0, by1 = pixel_box(p[k, 0], p[k, 1], radii[g, 0], radii[g, 1], x0, x1, y0, y1)
            thr = p[k, 9]
            for py in range(by0, by1 if thr > 0 else by0):
                dy = ftype(py) + half - p[k, 1]
                ly = py - y0
                rx0, rx1 = row_span(float(p[k, 0]), float(dy), float(ca), float(cb), float(cc), float(thr),
                                    bx0, bx1)
                for px in range(rx0, rx1):
                    lx = px - x0
                    if k >= stop[ly, lx]:
                        continue
                    dx = ftype(px) + half - p[k, 0]
                    sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if sigma < 0 or sigma > p[k, 9]:
                        continue
                    vis = np.exp(-sigma)
                    a = min(amax, op * vis)
                    if a < amin:
                        continue
                    inv = one / (one - a)
                    tr = trans[ly, lx] * inv
                    trans[ly, lx] = tr
                    w = a * tr
                    vr = v_image[py, px, 0]
                    vg = v_image[py, px, 1]
                    vb = v_image[py, px, 2]
                    g5 += w * vr
                    g6 += w * vg
                    g7 += w * vb
                    br = behind[ly, lx, 0]
                    bg = behind[ly, lx, 1]
                    bb = behind[ly, lx, 2]
                    v_a = (cr * tr - br * inv) * vr + (cg * tr - bg * inv) * vg + (cbl * tr - bb * inv) * vb
                    v_a += t_final[ly, lx] * inv * v_alpha[py, px]
                    behind[ly, lx, 0] = br + w * cr
                    behind[ly, lx, 1] = bg + w * cg
                    behind[ly, lx, 2] = bb + w * cbl
                    if op * vis <= amax:
                        g8 += vis * v_a
                        v_sigma = -op * vis * v_a
                        g0 += -(ca * dx + cb * dy) * v_sigma
                        g1 += -(cb * dx + cc * dy) * v_sigma
                        g2 += half * dx * dx * v_sigma
                        g3 += dx * dy * v_sigma
                        g4 += half * dy * dy * v_sigma
            row = start + k
            rows[row, 0] = g0
            rows[row, 1] = g1
            rows[row, 2] = g2
            rows[row, 3] = g3
            rows[row, 4] = g4
            rows[row, 5] = g5
            rows[row, 6] = g6
            rows[row, 7] = g7
            rows[row, 8] = g8


@njit(cache=True)
def reduce_rows(flat_ids: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """Sum intersection rows per Gaussian into ``out [N, 9]``, in a fixed order."""
    for k in range(flat_ids.shape[0]):
        g = flat_ids[k]
        for j in range(GRAD_COLS):
            out[g, j] += rows[k, j]

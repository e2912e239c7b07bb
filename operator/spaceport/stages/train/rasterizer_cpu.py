"""Compiled CPU kernels for 3DGS alpha compositing: tile binning, forward and backward.

Conventions follow gsplat's rasterizer so that the CPU and CUDA paths train the same model:
16-pixel tiles, pixel centres at ``+0.5``, ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` with the conic
``(a, b, c)``, ``alpha = min(0.999, opacity * exp(-sigma))``, contributions with ``alpha < 1/255`` or
``sigma < 0`` skipped, and a pixel stops before the Gaussian that would bring its transmittance to
``<= 1e-4``.

Layout of the work: parallel over tiles; inside a tile, Gaussians front to back (back to front in the
backward pass), and for each Gaussian only the rows its ellipse ``alpha >= 1/255`` reaches. A row is 16
pixels, evaluated as one branch-free loop of masks and selects that LLVM turns into SIMD code (8 or 16
lanes); ``exp`` comes from :mod:`fast_exp` because numba's scalar ``expf`` call would stop that. This is
~3x faster than visiting each Gaussian's pixels one by one, even though a row's lanes outside the ellipse
are computed and masked. Three things keep the loops vectorisable, each checked by a test of the
generated code: per-pixel state in flat arrays indexed by unsigned offsets (numba's wrap-around of
negative indices makes every access a gather), ``error_model='numpy'`` (Python's ZeroDivisionError check
is an early exit), and no calls other than the inlined ``exp_neg``.

The kernels are generic over float32/float64 (the tests check float64 gradients against a brute-force
reference), so constants are typed from the input arrays rather than written as Python floats, which
would silently promote float32 maths to float64.

The backward pass writes one gradient row per (tile, Gaussian) intersection, which only the thread
owning that tile touches; a serial pass then sums rows per Gaussian in a fixed order. That keeps the
result free of races and bit-identical from run to run (resume relies on it).
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

from spaceport.stages.train.fast_exp import MAX_X, exp_neg

if "NUMBA_THREADING_LAYER" not in os.environ:
    # OpenMP's worker threads spin after each parallel region and starve torch's ops running in between;
    # the workqueue layer sleeps instead (measured 2x faster full steps on a busy 2-core machine)
    numba.config.THREADING_LAYER = "workqueue"

TILE = 16
LANES = TILE * TILE
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
GRAD_COLS = 9
"""Per-intersection gradient row: mean2d x, y; conic a, b, c; colour r, g, b; opacity."""
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
"""Reassociation lets LLVM vectorise the sums; no ``nnan``/``ninf``, so degenerate inputs stay defined."""
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
) -> tuple[np.ndarray, np.ndarray]:
    """Sort Gaussians into the tiles their ``alpha >= 1/255`` ellipse touches, front to back per tile.

    ``radii`` is ``[N, 2]`` int (0 means culled by the projection). Returns ``tile_offsets``
    (``[tiles + 1]``: the range of tile ``t`` is ``offsets[t]:offsets[t+1]``) and ``flat_ids``.
    The ellipse is often much smaller than the 3-sigma box of ``radii`` (faint Gaussians), which saves
    intersections; pixels outside it contribute nothing, so the image is the same.
    """
    rect = tile_rects(means2d, conics, opacities, radii, width, height)
    drawn = np.flatnonzero(rect[:, 1] > rect[:, 0])
    keys = np.ascontiguousarray(depths[drawn])  # > 0 (behind the near plane is culled): bits sort as the values
    order = drawn[radix_argsort(keys.view(np.uint32 if keys.itemsize == 4 else np.uint64))]
    return fill_tiles(rect, order, (width + TILE - 1) // TILE, (height + TILE - 1) // TILE)


@njit(parallel=True, cache=True)
def tile_rects(means2d: np.ndarray, conics: np.ndarray, opacities: np.ndarray, radii: np.ndarray, width: int,
               height: int) -> np.ndarray:
    """``[N, 4]`` tile ranges ``x0, x1, y0, y1`` (end-exclusive) of each Gaussian's ellipse; empty if culled."""
    n = means2d.shape[0]
    rect = np.zeros((n, 4), np.int32)
    for g in prange(n):
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


@njit(cache=True)
def gather_tile(
    means2d: np.ndarray, conics: np.ndarray, colors: np.ndarray, opacities: np.ndarray, flat_ids: np.ndarray,
    start: int, end: int,
) -> np.ndarray:
    """Pack one tile's Gaussians contiguously (front to back): x, y, a, b, c, opacity, r, g, b, skip."""
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
        row[9] = skip_threshold(float(opacities[g]))
    return out


@njit(cache=True)
def gaussian_rows(p: np.ndarray, k: int, y0: int, y1: int) -> tuple[int, int]:
    """Rows ``[r0, r1)`` of the tile rows ``[y0, y1)`` that Gaussian ``k``'s ellipse reaches."""
    _, ey = ellipse_extent(float(p[k, 2]), float(p[k, 3]), float(p[k, 4]), float(p[k, 9]))
    if ey < 0:
        return y0, y0
    my = float(p[k, 1]) - 0.5
    return max(y0, int(np.ceil(my - ey))), min(y1, int(np.floor(my + ey)) + 1)


@njit(cache=True)
def spread(i: int, n: int) -> int:
    """Tile for the ``i``-th iteration of a ``prange`` over ``n`` tiles: the even tiles, then the odd ones.

    numba hands each thread one contiguous block of iterations; in image order one thread would get the
    top half and the other the bottom, and in an aerial view those differ a lot in work (buildings near
    the camera vs distant ground). Interleaved, each thread gets every other tile of the whole image.
    """
    half = (n + 1) // 2
    return 2 * i if i < half else 2 * (i - half) + 1


@njit(cache=True)
def pixel_centres(x0: int, y0: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the centre of each of a tile's 256 pixels (row-major, as the flat pixel state)."""
    xs = np.empty(LANES, dtype)
    ys = np.empty(LANES, dtype)
    for j in range(LANES):
        xs[j] = x0 + j % TILE + 0.5
        ys[j] = y0 + j // TILE + 0.5
    return xs, ys


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def forward_tile(p: np.ndarray, x0: int, y0: int, y1: int, live: np.ndarray, trans: np.ndarray, red: np.ndarray,
                 green: np.ndarray, blue: np.ndarray, stop: np.ndarray, remaining: int) -> None:
    """Composite one tile's Gaussians ``p`` into the flat ``[256]`` pixel state.

    ``live`` is 1 for a pixel still accumulating, 0 once done (or outside the image); ``stop`` gets the
    end of each pixel's run (index after its last contributing Gaussian). The rows a Gaussian reaches
    are contiguous in the flat state, so they are one loop, vectorised as a whole.
    """
    dt = p.dtype.type
    one, half, zero = dt(1.0), dt(0.5), dt(0.0)
    amin, amax, tmin, xmax = dt(ALPHA_MIN), dt(ALPHA_MAX), dt(T_MIN), dt(MAX_X)
    xs, ys = pixel_centres(x0, y0, p.dtype)
    for k in range(p.shape[0]):
        r0, r1 = gaussian_rows(p, k, y0, y1)
        if r1 <= r0:
            continue
        mx, my, qa, qb, qc, op = p[k, 0], p[k, 1], p[k, 2], p[k, 3], p[k, 4], p[k, 5]
        cr, cg, cb = p[k, 6], p[k, 7], p[k, 8]
        after = np.int32(k + 1)
        first = np.uint64((r0 - y0) * TILE)
        ended = 0
        for i in range((r1 - r0) * TILE):
            j = first + np.uint64(i)
            dx = xs[j] - mx
            dy = ys[j] - my
            sigma = half * (qa * dx * dx + qc * dy * dy) + qb * dx * dy
            a = min(amax, op * exp_neg(min(max(sigma, zero), xmax)))
            drawn = (sigma >= zero) & (a >= amin) & (live[j] > zero)
            t = trans[j]
            t_next = t * (one - a)
            ends = drawn & (t_next <= tmin)
            adds = drawn & (t_next > tmin)
            w = a * t if adds else zero
            red[j] += w * cr
            green[j] += w * cg
            blue[j] += w * cb
            trans[j] = t_next if adds else t
            live[j] = zero if ends else live[j]
            stop[j] = after if adds else stop[j]
            ended += 1 if ends else 0
        remaining -= ended
        if remaining <= 0:
            return


@njit(parallel=True, cache=True)
def composite_forward(
    means2d: np.ndarray, conics: np.ndarray, colors: np.ndarray, opacities: np.ndarray, offsets: np.ndarray,
    flat_ids: np.ndarray, width: int, height: int, image: np.ndarray, alpha: np.ndarray, last: np.ndarray,
) -> None:
    """Fill ``image [H, W, 3]``, ``alpha [H, W]`` and ``last [H, W]`` (end of each pixel's run)."""
    tiles_x = (width + TILE - 1) // TILE
    n_tiles = offsets.shape[0] - 1
    dtype = opacities.dtype
    one = dtype.type(1.0)
    for i in prange(n_tiles):
        t = spread(i, n_tiles)
        start = offsets[t]
        ty = t // tiles_x
        x0, y0 = (t - ty * tiles_x) * TILE, ty * TILE
        x1, y1 = min(x0 + TILE, width), min(y0 + TILE, height)
        p = gather_tile(means2d, conics, colors, opacities, flat_ids, start, offsets[t + 1])
        live = np.zeros(LANES, dtype)
        for py in range(y0, y1):
            live[(py - y0) * TILE:(py - y0) * TILE + x1 - x0] = one
        trans = np.ones(LANES, dtype)
        # separate arrays, not rows of one: LLVM gives up vectorising stores through views of one buffer
        red, green, blue = np.zeros(LANES, dtype), np.zeros(LANES, dtype), np.zeros(LANES, dtype)
        stop = np.zeros(LANES, np.int32)
        forward_tile(p, x0, y0, y1, live, trans, red, green, blue, stop, (x1 - x0) * (y1 - y0))
        for py in range(y0, y1):
            for px in range(x0, x1):
                j = (py - y0) * TILE + px - x0
                image[py, px, 0] = red[j]
                image[py, px, 1] = green[j]
                image[py, px, 2] = blue[j]
                alpha[py, px] = one - trans[j]
                last[py, px] = start + stop[j]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def backward_tile(p: np.ndarray, n_max: int, x0: int, y0: int, y1: int, stop: np.ndarray, trans: np.ndarray,
                  v_red: np.ndarray, v_green: np.ndarray, v_blue: np.ndarray, rest: np.ndarray,
                  rows: np.ndarray) -> None:
    """Gradients of one tile's first ``n_max`` Gaussians into ``rows [n, 9]``, back to front.

    Per pixel (flat ``[256]``): ``stop`` (run length), ``trans`` (the transmittance after the run, divided
    back Gaussian by Gaussian), the upstream colour gradient ``v_*`` and ``rest``, which starts at
    ``-t_final * v_alpha`` and accumulates ``v . colour`` of what lies behind the current Gaussian: with it
    ``dL/dalpha = t_before (v . c) - rest / (1 - alpha)``, one array instead of three colours.
    """
    dt = p.dtype.type
    one, half, zero = dt(1.0), dt(0.5), dt(0.0)
    amin, amax, xmax = dt(ALPHA_MIN), dt(ALPHA_MAX), dt(MAX_X)
    xs, ys = pixel_centres(x0, y0, p.dtype)
    for k in range(n_max - 1, -1, -1):
        r0, r1 = gaussian_rows(p, k, y0, y1)
        mx, my, qa, qb, qc, op = p[k, 0], p[k, 1], p[k, 2], p[k, 3], p[k, 4], p[k, 5]
        cr, cg, cb = p[k, 6], p[k, 7], p[k, 8]
        kk = np.int32(k)
        su = sv = suu = suv = svv = s5 = s6 = s7 = s8 = zero
        first = np.uint64((r0 - y0) * TILE)
        for i in range(max(0, r1 - r0) * TILE):
            j = first + np.uint64(i)
            dx = xs[j] - mx
            dy = ys[j] - my
            sigma = half * (qa * dx * dx + qc * dy * dy) + qb * dx * dy
            vis = exp_neg(min(max(sigma, zero), xmax))
            raw = op * vis
            a = min(amax, raw)
            drawn = (sigma >= zero) & (a >= amin) & (kk < stop[j])
            inv = one / (one - a)
            t_before = trans[j] * inv
            trans[j] = t_before if drawn else trans[j]
            w = a * t_before if drawn else zero
            vr, vg, vb = v_red[j], v_green[j], v_blue[j]
            s5 += w * vr
            s6 += w * vg
            s7 += w * vb
            vc = cr * vr + cg * vg + cb * vb
            v_a = t_before * vc - inv * rest[j]
            rest[j] += w * vc
            unclamped = drawn & (raw <= amax)  # the clamp at 0.999 passes no gradient
            s8 += vis * v_a if unclamped else zero
            v_sigma = -raw * v_a if unclamped else zero
            u = v_sigma * dx
            v = v_sigma * dy
            su += u
            sv += v
            suu += u * dx
            suv += u * dy
            svv += v * dy
        # d sigma / d mean2d = -(Q d), d sigma / d conic = (dx^2 / 2, dx dy, dy^2 / 2)
        rows[k, 0] = -(qa * su + qb * sv)
        rows[k, 1] = -(qb * su + qc * sv)
        rows[k, 2] = half * suu
        rows[k, 3] = suv
        rows[k, 4] = half * svv
        rows[k, 5] = s5
        rows[k, 6] = s6
        rows[k, 7] = s7
        rows[k, 8] = s8


@njit(parallel=True, cache=True)
def composite_backward(
    means2d: np.ndarray, conics: np.ndarray, colors: np.ndarray, opacities: np.ndarray, offsets: np.ndarray,
    flat_ids: np.ndarray, width: int, height: int, alpha: np.ndarray, last: np.ndarray, v_image: np.ndarray,
    v_alpha: np.ndarray, rows: np.ndarray,
) -> None:
    """Per-intersection gradients into ``rows [I, 9]`` (each row written once, by its tile's thread)."""
    tiles_x = (width + TILE - 1) // TILE
    n_tiles = offsets.shape[0] - 1
    dtype = opacities.dtype
    one = dtype.type(1.0)
    for i in prange(n_tiles):
        t = spread(i, n_tiles)
        start = offsets[t]
        ty = t // tiles_x
        x0, y0 = (t - ty * tiles_x) * TILE, ty * TILE
        x1, y1 = min(x0 + TILE, width), min(y0 + TILE, height)
        p = gather_tile(means2d, conics, colors, opacities, flat_ids, start, offsets[t + 1])
        stop = np.zeros(LANES, np.int32)  # lanes outside the image keep 0: nothing is drawn there
        trans = np.ones(LANES, dtype)
        v_red, v_green, v_blue = np.zeros(LANES, dtype), np.zeros(LANES, dtype), np.zeros(LANES, dtype)
        rest = np.zeros(LANES, dtype)
        n_max = 0
        for py in range(y0, y1):
            for px in range(x0, x1):
                j = (py - y0) * TILE + px - x0
                trans[j] = one - alpha[py, px]
                stop[j] = last[py, px] - start
                n_max = max(n_max, last[py, px] - start)
                v_red[j] = v_image[py, px, 0]
                v_green[j] = v_image[py, px, 1]
                v_blue[j] = v_image[py, px, 2]
                rest[j] = -trans[j] * v_alpha[py, px]
        backward_tile(p, n_max, x0, y0, y1, stop, trans, v_red, v_green, v_blue, rest, rows[start:offsets[t + 1]])


@njit(cache=True)
def reduce_rows(flat_ids: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """Sum intersection rows per Gaussian into ``out [N, 9]``, in a fixed order."""
    for k in range(flat_ids.shape[0]):
        g = flat_ids[k]
        for j in range(GRAD_COLS):
            out[g, j] += rows[k, j]

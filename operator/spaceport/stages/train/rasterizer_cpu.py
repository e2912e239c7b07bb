"""Compiled CPU kernels for 3DGS alpha compositing, forward and backward (binning: :mod:`tile_binning`).

Conventions follow gsplat's rasterizer so that the CPU and CUDA paths train the same model:
16-pixel tiles, pixel centres at ``+0.5``, ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` with the conic
``(a, b, c)``, ``alpha = min(0.999, opacity * exp(-sigma))``, contributions with ``alpha < 1/255`` or
``sigma < 0`` skipped, and a pixel stops before the Gaussian that would bring its transmittance to
``<= 1e-4``.

Layout of the work: parallel over tiles; inside a tile, Gaussians front to back (back to front in the
backward pass), and for each Gaussian, in each half-tile of 8 columns, only the rows in which its ellipse
``alpha >= 1/255`` reaches a pixel (binning's :attr:`tile_binning.TileBins.spans`: for tilted or elongated
ellipses fewer than their box's, a quarter fewer pixels in the demo's views; visited in pairs of rows:
:func:`span_lanes`). The flat per-pixel state holds the left half-tile's 16 rows of 8 pixels, then the
right's, so a Gaussian's rows in a half are one contiguous branch-free loop of masks and selects that
LLVM turns into SIMD code; ``exp`` comes
from :mod:`fast_exp` because numba's scalar ``expf`` call would stop that. This is ~3x faster than
visiting each Gaussian's pixels one by one, even though lanes outside the ellipse are computed and
masked; half-tiles instead of full 16-pixel rows cut those lanes by a third (most Gaussians are a few
pixels wide) and the compositor's time by ~15%. Each view's intersections are packed once
(:func:`pack_intersections`) for both passes, in tile order. Three things keep the loops vectorisable,
each checked by a test of the generated code: per-pixel state in a flat array indexed by unsigned offsets
(numba's wrap-around of negative indices makes every access a gather), ``error_model='numpy'`` (Python's
ZeroDivisionError check is an early exit), and no calls other than the inlined ``exp_neg``. Three more keep
them fast on AVX2 (AMD Zen 3): every per-pixel store is unconditional, its value picked by a select inside
arithmetic (a store of ``x if c else loaded`` becomes a masked store, and those made the forward loop 2x
slower there, the backward ~15%); the count of finished pixels is a float sum (an integer one kept LLVM
at 4 lanes instead of 8); and all of a tile's per-pixel quantities are slots of one array
(:func:`tile_state`), so LLVM emits no test that arrays overlap before each loop (with one array per
quantity that test cost ~20% of both passes in the bench).

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
from spaceport.stages.train.tile_binning import ALPHA_MIN, TILE

if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    # OpenMP first (libgomp; the stage image installs it), workqueue where it is missing. Measured with
    # bench/train.py on 2 cores, full step at 50k Gaussians: 44 vs 56 ms quiet, 87 vs 83 ms beside one
    # busy process, 94 vs 121 ms beside two; the compositor 9-11 ms vs 12-22 ms. workqueue's idle threads
    # wake slowly and often leave one core doing a parallel region alone; OpenMP's spin briefly first.
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

LANES = TILE * TILE
HALF = TILE // 2
"""Columns in a half-tile: the flat pixel state holds the left half's 16 rows of 8, then the right's."""
ALPHA_MAX = 0.999
T_MIN = 1e-4
GRAD_COLS = 9
"""Per-intersection gradient row: mean2d x, y; conic a, b, c; colour r, g, b; opacity."""
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
"""Reassociation lets LLVM vectorise the sums; no ``nnan``/``ninf``, so degenerate inputs stay defined."""
XS, YS, TRANS, STOP = 0, 1, 2, 3
"""Slots of a :func:`tile_state` (runs of 256 lanes) in both passes: pixel centres, transmittance, run end."""
RED, GREEN, BLUE = 4, 5, 6
FORWARD_SLOTS = 7
V_RED, V_GREEN, V_BLUE, REST, V_OPACITY = 4, 5, 6, 7, 8
BACKWARD_SLOTS = 9


@njit(parallel=True, cache=True)
def pack_intersections(means2d: np.ndarray, conics: np.ndarray, colors: np.ndarray, opacities: np.ndarray,
                       flat_ids: np.ndarray) -> np.ndarray:
    """Each tile intersection's Gaussian, in ``flat_ids`` order (so each tile's run is contiguous, front to
    back): ``[I, 9]`` x, y, a, b, c, opacity, r, g, b. Packed once a view for both passes, instead of
    gathered per tile from all over memory."""
    n = flat_ids.shape[0]
    packed = np.empty((n, 9), opacities.dtype)
    for k in prange(n):
        g = flat_ids[k]
        packed[k, 0] = means2d[g, 0]
        packed[k, 1] = means2d[g, 1]
        packed[k, 2] = conics[g, 0]
        packed[k, 3] = conics[g, 1]
        packed[k, 4] = conics[g, 2]
        packed[k, 5] = opacities[g]
        packed[k, 6] = colors[g, 0]
        packed[k, 7] = colors[g, 1]
        packed[k, 8] = colors[g, 2]
    return packed


@njit(cache=True)
def lane(r: np.uint64, c: np.uint64) -> np.uint64:
    """Index in the flat pixel state of the tile's pixel at row ``r``, column ``c`` (unsigned, as every
    per-pixel index here: numba adds a wrap-around branch to each access through a signed one)."""
    return (c >> np.uint64(3)) * np.uint64(HALF * TILE) + r * np.uint64(HALF) + (c & np.uint64(HALF - 1))


@njit(cache=True)
def span_lanes(spans: np.ndarray, k: int, h: int) -> tuple[np.uint64, int]:
    """First lane in the flat pixel state and number of lanes of Gaussian ``k``'s rows in half-tile ``h``
    (:attr:`tile_binning.TileBins.spans`; 0 where it misses the half), in pairs of rows: 16 lanes, one
    AVX-512 vector (two AVX2 ones).

    An odd span gets one more row, below it or, at the tile's last row, above it: rows outside the span
    draw nothing (the per-lane test rejects them as it does any pixel outside the ellipse), so the image
    is the same. The count, a multiple of 16 that LLVM can see (a shift), leaves no partial vector: the
    loops lose their 8-lane remainder code, which had cost more than the extra row (measured in the
    bench: backward -4 to -7%, forward -2%; odd spans are 53% of the half-tile visits there).
    """
    r0, r1 = np.int64(spans[k, 2 * h]), np.int64(spans[k, 2 * h + 1])
    pairs = max(r1 - r0 + 1, 0) >> 1
    r0 = min(r0, TILE - 2 * pairs)
    return np.uint64(h * HALF * TILE + r0 * HALF), pairs << 4


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
def pixel_centres(dtype: np.dtype) -> np.ndarray:
    """The first two slots of every :func:`tile_state`: x and y of the centre of each of a tile's pixels
    relative to its corner (the same for every tile: kernels subtract the corner from the Gaussian)."""
    centres = np.empty(2 * LANES, dtype)
    for r in range(TILE):
        for c in range(TILE):
            j = lane(np.uint64(r), np.uint64(c))
            centres[np.uint64(XS * LANES) + j] = c + 0.5
            centres[np.uint64(YS * LANES) + j] = r + 0.5
    return centres


@njit(cache=True)
def in_tile(j: np.uint64, cols: np.uint64, rows: np.uint64) -> bool:
    """Whether lane ``j`` of the flat pixel state is one of the tile's ``rows x cols`` pixels in the image."""
    r, c = (j >> np.uint64(3)) & np.uint64(TILE - 1), ((j >> np.uint64(7)) << np.uint64(3)) | (j & np.uint64(HALF - 1))
    return (r < rows) & (c < cols)


@njit(cache=True)
def tile_state(slots: int, centres: np.ndarray) -> np.ndarray:
    """A tile's flat per-pixel state: ``slots`` runs of 256 lanes in one array, starting with the
    :func:`pixel_centres` ``centres``.

    One array, not one per quantity: a kernel's loads and stores are then at constant distances from one
    pointer, which LLVM proves independent. Across separate arrays it cannot, and before each short loop
    (a Gaussian's rows in a half-tile: 3-5 vectors of 8 in the bench) it compared every pair of them,
    ~150 instructions for ~350 of work."""
    s = np.empty(slots * LANES, centres.dtype)
    s[:2 * LANES] = centres
    return s


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def forward_tile(p: np.ndarray, spans: np.ndarray, x0: int, y0: int, s: np.ndarray, remaining: int) -> None:
    """Composite one tile's Gaussians ``p`` (row ``spans``) into its :func:`tile_state` ``s``.

    Slots: ``TRANS``, each pixel's transmittance while it accumulates, negated once it is done (so the
    value survives) and -1 outside the image: a negative lane draws nothing; ``RED``, ``GREEN``, ``BLUE``;
    ``STOP``, the end of each pixel's run (index after its last contributing Gaussian, a float: exact
    below 2^24 Gaussians a tile). In each half-tile the rows a Gaussian reaches are contiguous in the flat
    state, so they are one loop, vectorised as a whole.
    """
    dt = p.dtype.type
    one, half, zero = dt(1.0), dt(0.5), dt(0.0)
    amin, amax, tmin, xmax = dt(ALPHA_MIN), dt(ALPHA_MAX), dt(T_MIN), dt(MAX_X)
    ox, oy = dt(x0), dt(y0)
    o_x, o_y, o_t = np.uint64(XS * LANES), np.uint64(YS * LANES), np.uint64(TRANS * LANES)
    o_r, o_g, o_b, o_s = (np.uint64(RED * LANES), np.uint64(GREEN * LANES), np.uint64(BLUE * LANES),
                          np.uint64(STOP * LANES))
    for k in range(p.shape[0]):
        mx, my, qa, qb, qc, op = p[k, 0] - ox, p[k, 1] - oy, p[k, 2], p[k, 3], p[k, 4], p[k, 5]
        cr, cg, cb = p[k, 6], p[k, 7], p[k, 8]
        after = dt(k + 1)
        ended = zero
        for h in range(2):
            first, count = span_lanes(spans, k, h)
            for i in range(count):
                j = first + np.uint64(i)
                dx = s[o_x + j] - mx
                dy = s[o_y + j] - my
                sigma = half * (qa * dx * dx + qc * dy * dy) + qb * dx * dy
                a = min(amax, op * exp_neg(min(max(sigma, zero), xmax)))
                t = s[o_t + j]
                drawn = (sigma >= zero) & (a >= amin) & (t > zero)
                t_next = t * (one - a)
                ends = drawn & (t_next <= tmin)
                adds = drawn & (t_next > tmin)
                w = a * t if adds else zero
                s[o_r + j] += w * cr
                s[o_g + j] += w * cg
                s[o_b + j] += w * cb
                s[o_t + j] = t * ((one - a) if adds else (-one if ends else one))  # = t_next, -t or t, exactly
                # stop <= k < after; integers below 2^24, so this is exactly after or stop (a max() or select
                # of the loaded value is a masked store)
                s[o_s + j] += (after - s[o_s + j]) * dt(adds)
                ended += one if ends else zero
        remaining -= int(ended)
        if remaining <= 0:
            return


@njit(parallel=True, cache=True)
def composite_forward(
    packed: np.ndarray, spans: np.ndarray, offsets: np.ndarray, width: int, height: int, image: np.ndarray,
    alpha: np.ndarray, last: np.ndarray,
) -> None:
    """Fill ``image [H, W, 3]``, ``alpha [H, W]`` and ``last [H, W]`` (end of each pixel's run) from the
    :func:`pack_intersections` of the tiles ``offsets``."""
    tiles_x = (width + TILE - 1) // TILE
    n_tiles = offsets.shape[0] - 1
    dtype = packed.dtype
    one, zero = dtype.type(1.0), dtype.type(0.0)
    centres = pixel_centres(dtype)
    o_t, o_s = np.uint64(TRANS * LANES), np.uint64(STOP * LANES)
    o_r, o_g, o_b = np.uint64(RED * LANES), np.uint64(GREEN * LANES), np.uint64(BLUE * LANES)
    for i in prange(n_tiles):
        t = spread(i, n_tiles)
        start = offsets[t]
        ty = t // tiles_x
        x0, y0 = (t - ty * tiles_x) * TILE, ty * TILE
        n_cols, n_rows = np.uint64(min(TILE, width - x0)), np.uint64(min(TILE, height - y0))
        p, tile_spans = packed[start:offsets[t + 1]], spans[start:offsets[t + 1]]
        s = tile_state(FORWARD_SLOTS, centres)
        s[STOP * LANES:] = zero
        for j in range(np.uint64(LANES)):
            s[o_t + j] = one if in_tile(j, n_cols, n_rows) else -one
        forward_tile(p, tile_spans, x0, y0, s, int(n_cols * n_rows))
        for r in range(n_rows):
            py = np.uint64(y0) + r
            for c in range(n_cols):
                px, j = np.uint64(x0) + c, lane(r, c)
                image[py, px, 0] = s[o_r + j]
                image[py, px, 1] = s[o_g + j]
                image[py, px, 2] = s[o_b + j]
                alpha[py, px] = one - abs(s[o_t + j])
                last[py, px] = start + np.int64(s[o_s + j])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def backward_tile(p: np.ndarray, spans: np.ndarray, n_max: int, x0: int, y0: int, s: np.ndarray,
                  rows: np.ndarray) -> None:
    """Gradients of one tile's first ``n_max`` Gaussians into ``rows [n, 9]``, back to front.

    Slots of the :func:`tile_state` ``s``: ``STOP`` (run length, a float), ``TRANS`` (the transmittance
    after the run, divided back Gaussian by Gaussian), the upstream colour gradient ``V_RED``, ``V_GREEN``,
    ``V_BLUE`` and ``REST``, which starts at ``-t_final * v_alpha`` and accumulates ``v . colour`` of what
    lies behind the current Gaussian: with it ``dL/dalpha = t_before (v . c) - rest / (1 - alpha)``, one
    slot instead of three colours; ``V_OPACITY`` passes each lane's ``dL/dopacity`` from the first loop over
    a Gaussian's rows to the second, which sums its moments. One loop ran out of AVX2's 16 registers and
    kept 14 on the stack (4 sums, 10 constants): split, the backward is 4-7% faster on Zen 3, the same with AVX-512.
    """
    dt = p.dtype.type
    one, half, zero = dt(1.0), dt(0.5), dt(0.0)
    amin, amax, xmax = dt(ALPHA_MIN), dt(ALPHA_MAX), dt(MAX_X)
    ox, oy = dt(x0), dt(y0)
    o_x, o_y, o_s, o_t = (np.uint64(XS * LANES), np.uint64(YS * LANES), np.uint64(STOP * LANES),
                          np.uint64(TRANS * LANES))
    o_r, o_g, o_b, o_e = (np.uint64(V_RED * LANES), np.uint64(V_GREEN * LANES), np.uint64(V_BLUE * LANES),
                          np.uint64(REST * LANES))
    o_v = np.uint64(V_OPACITY * LANES)
    for k in range(n_max - 1, -1, -1):
        mx, my, qa, qb, qc, op = p[k, 0] - ox, p[k, 1] - oy, p[k, 2], p[k, 3], p[k, 4], p[k, 5]
        cr, cg, cb = p[k, 6], p[k, 7], p[k, 8]
        kk = dt(k)
        su = sv = suu = suv = svv = s5 = s6 = s7 = s8 = zero
        for h in range(2):
            first, count = span_lanes(spans, k, h)
            for i in range(count):
                j = first + np.uint64(i)
                dx = s[o_x + j] - mx
                dy = s[o_y + j] - my
                sigma = half * (qa * dx * dx + qc * dy * dy) + qb * dx * dy
                vis = exp_neg(min(max(sigma, zero), xmax))
                raw = op * vis
                a = min(amax, raw)
                drawn = (sigma >= zero) & (a >= amin) & (kk < s[o_s + j])
                ad = a * dt(drawn)  # 0 where not drawn: there inv is 1 and trans stays exactly as it is
                inv = one / (one - ad)
                t_before = s[o_t + j] * inv
                s[o_t + j] = t_before
                w = ad * t_before
                vr, vg, vb = s[o_r + j], s[o_g + j], s[o_b + j]
                s5 += w * vr
                s6 += w * vg
                s7 += w * vb
                vc = cr * vr + cg * vg + cb * vb
                rest = s[o_e + j]
                v_a = t_before * vc - inv * rest
                s[o_e + j] = rest + w * vc
                unclamped = drawn & (raw <= amax)  # the clamp at 0.999 passes no gradient
                e = vis * v_a if unclamped else zero  # dL/dopacity; dL/dsigma = -op e
                s[o_v + j] = e
                s8 += e
            for i in range(count):
                j = first + np.uint64(i)
                e = s[o_v + j]
                dx = s[o_x + j] - mx
                dy = s[o_y + j] - my
                u = e * dx
                v = e * dy
                su += u
                sv += v
                suu += u * dx
                suv += u * dy
                svv += v * dy
        # d sigma / d mean2d = -(Q d), d sigma / d conic = (dx^2 / 2, dx dy, dy^2 / 2), and -op is factored out of
        # the sums
        rows[k, 0] = op * (qa * su + qb * sv)
        rows[k, 1] = op * (qb * su + qc * sv)
        rows[k, 2] = -op * half * suu
        rows[k, 3] = -op * suv
        rows[k, 4] = -op * half * svv
        rows[k, 5] = s5
        rows[k, 6] = s6
        rows[k, 7] = s7
        rows[k, 8] = s8


@njit(parallel=True, cache=True)
def composite_backward(
    packed: np.ndarray, spans: np.ndarray, offsets: np.ndarray, width: int, height: int, alpha: np.ndarray,
    last: np.ndarray, v_image: np.ndarray, v_alpha: np.ndarray, rows: np.ndarray,
) -> None:
    """Per-intersection gradients into ``rows [I, 9]`` (each row written once, by its tile's thread; the
    caller's array may be uninitialised)."""
    tiles_x = (width + TILE - 1) // TILE
    n_tiles = offsets.shape[0] - 1
    dtype = packed.dtype
    one, zero = dtype.type(1.0), dtype.type(0.0)
    centres = pixel_centres(dtype)
    o_t, o_s, o_e = np.uint64(TRANS * LANES), np.uint64(STOP * LANES), np.uint64(REST * LANES)
    o_r, o_g, o_b = np.uint64(V_RED * LANES), np.uint64(V_GREEN * LANES), np.uint64(V_BLUE * LANES)
    for i in prange(n_tiles):
        t = spread(i, n_tiles)
        start = offsets[t]
        ty = t // tiles_x
        x0, y0 = (t - ty * tiles_x) * TILE, ty * TILE
        n_cols, n_rows = np.uint64(min(TILE, width - x0)), np.uint64(min(TILE, height - y0))
        p, tile_spans = packed[start:offsets[t + 1]], spans[start:offsets[t + 1]]
        s = tile_state(BACKWARD_SLOTS, centres)
        s[TRANS * LANES:] = zero  # lanes outside the image keep stop 0: nothing is drawn there
        n_max = 0
        for r in range(n_rows):
            py = np.uint64(y0) + r
            for c in range(n_cols):
                px, j = np.uint64(x0) + c, lane(r, c)
                trans = one - alpha[py, px]
                run = last[py, px] - start
                s[o_t + j] = trans
                s[o_s + j] = run
                n_max = max(n_max, run)
                s[o_r + j] = v_image[py, px, 0]
                s[o_g + j] = v_image[py, px, 1]
                s[o_b + j] = v_image[py, px, 2]
                s[o_e + j] = -trans * v_alpha[py, px]
        tile_rows = rows[start:offsets[t + 1]]
        tile_rows[n_max:] = 0  # past every pixel's run: no gradient (rows come uninitialised)
        backward_tile(p, tile_spans, n_max, x0, y0, s, tile_rows)


@njit(parallel=True, cache=True)
def reduce_rows(flat_ids: np.ndarray, rows: np.ndarray, v_means2d: np.ndarray, v_conics: np.ndarray,
                v_colors: np.ndarray, v_opacities: np.ndarray) -> None:
    """Sum intersection rows per Gaussian into the gradients (zeroed here: they may come uninitialised),
    in a fixed order.

    One thread per gradient array (no two threads write to one cache line), each a contiguous array:
    autograd copies strided gradients into the parameters' layout (measured: 0.9 ms a call for views of
    one [9, N] array, 0.25 ms for contiguous ones, at 20k Gaussians)."""
    for part in prange(4):
        if part == 0:
            v_means2d[:] = 0
        elif part == 1:
            v_conics[:] = 0
        elif part == 2:
            v_colors[:] = 0
        else:
            v_opacities[:] = 0
        for k in range(flat_ids.shape[0]):
            g = flat_ids[k]
            if part == 0:
                v_means2d[g, 0] += rows[k, 0]
                v_means2d[g, 1] += rows[k, 1]
            elif part == 1:
                v_conics[g, 0] += rows[k, 2]
                v_conics[g, 1] += rows[k, 3]
                v_conics[g, 2] += rows[k, 4]
            elif part == 2:
                v_colors[g, 0] += rows[k, 5]
                v_colors[g, 1] += rows[k, 6]
                v_colors[g, 2] += rows[k, 7]
            else:
                v_opacities[g] += rows[k, 8]

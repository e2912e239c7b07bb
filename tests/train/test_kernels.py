"""The compositing kernels' building blocks: the vectorisable exp, the radix sort, tile binning, and that the per-pixel
loops really compile to SIMD code (the speed of CPU training rests on it; a harmless-looking change such
as indexing through views of one buffer silently made them scalar and 7x slower)."""

from __future__ import annotations

import re

import numba
import numpy as np

from spaceport.stages.train import rasterizer_cpu as kernels
from spaceport.stages.train.fast_exp import MAX_X, exp_neg
from spaceport.stages.train.tile_binning import TILE, bin_tiles, radix_argsort


@numba.njit
def _exp_all(xs: np.ndarray, out: np.ndarray) -> None:
    for i in range(xs.shape[0]):
        out[i] = exp_neg(xs[i])


def test_float32_exp_is_as_accurate_as_float32_rounding() -> None:
    xs = np.linspace(0.0, MAX_X, 200_001).astype(np.float32)
    out = np.empty_like(xs)
    _exp_all(xs, out)
    exact = np.exp(-xs.astype(np.float64))
    assert float(np.abs(out / exact - 1).max()) < 2e-7  # float32's rounding step is 6e-8


def test_float64_exp_is_numpys() -> None:
    xs = np.linspace(0.0, MAX_X, 1001)
    out = np.empty_like(xs)
    _exp_all(xs, out)
    assert np.allclose(out, np.exp(-xs), rtol=1e-15, atol=0)


def test_radix_argsort_is_a_stable_argsort() -> None:
    rng = np.random.default_rng(0)
    for dtype, view in ((np.float32, np.uint32), (np.float64, np.uint64)):
        depths = (rng.random(5000) * 40 + 0.01).astype(dtype)
        depths[::9] = depths[4]  # ties keep index order
        order = radix_argsort(depths.view(view))
        assert np.array_equal(order, np.argsort(depths, kind="stable"))
    assert len(radix_argsort(np.empty(0, np.uint32))) == 0


def test_tiles_list_the_gaussians_whose_box_reaches_them_front_to_back() -> None:
    rng = np.random.default_rng(2)
    n, width, height = 3000, 150, 100  # tiles at the right and bottom edges are partial
    means2d = (rng.random((n, 2)) * [width + 40, height + 40] - 20).astype(np.float32)
    conics = np.stack([rng.random(n) * 0.5 + 0.02, rng.random(n) * 0.02 - 0.01, rng.random(n) * 0.5 + 0.02], 1)
    opacities = (rng.random(n) * 0.9 + 0.05).astype(np.float32)
    depths = rng.integers(1, 50, n).astype(np.float32)  # many ties: they keep index order
    radii = np.where(rng.random((n, 1)) < 0.1, 0, 20).repeat(2, 1).astype(np.int32)  # a tenth culled
    offsets, flat_ids, _, boxes = bin_tiles(means2d, conics.astype(np.float32), opacities, radii,
                                            depths, width, height)
    tiles_x = -(-width // TILE)
    expected: list[list[int]] = [[] for _ in range(len(offsets) - 1)]
    for g in np.argsort(depths, kind="stable"):
        x0, x1, y0, y1 = boxes[g]
        if radii[g, 0] == 0:
            assert x1 < x0  # culled: no box
            continue
        for ty in range(y0 // TILE, y1 // TILE + 1):
            for tx in range(x0 // TILE, x1 // TILE + 1):
                expected[ty * tiles_x + tx].append(int(g))
    assert [list(flat_ids[offsets[t]:offsets[t + 1]]) for t in range(len(expected))] == expected
    assert sum(map(len, expected)) > n  # many Gaussians reach more than one tile


def test_row_spans_keep_every_pixel_a_gaussian_draws_and_drop_rows_of_tilted_ones() -> None:
    rng = np.random.default_rng(3)
    n, width, height = 400, 96, 80
    means2d = (rng.random((n, 2)) * [width, height]).astype(np.float32)
    # elongated and tilted: covariances from random rotations of axes 0.5-2 px by 3-12 px
    angle = rng.random(n) * np.pi
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], 1).reshape(n, 2, 2)
    axes = np.stack([rng.uniform(0.5, 2.0, n), rng.uniform(3.0, 12.0, n)], 1)
    cov = rot @ (axes[:, :, None] ** 2 * np.eye(2)) @ rot.transpose(0, 2, 1)
    inv = np.linalg.inv(cov)
    conics = np.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], 1).astype(np.float32)
    opacities = rng.uniform(0.05, 1.0, n).astype(np.float32)
    radii = np.full((n, 2), 40, np.int32)
    bins = bin_tiles(means2d, conics, opacities, radii, rng.random(n).astype(np.float32) + 1, width, height)
    tiles_x = -(-width // TILE)
    px, py = np.meshgrid(np.arange(TILE), np.arange(TILE))
    drawn_pixels = span_rows = box_rows = 0
    for t in range(len(bins.offsets) - 1):
        x0, y0 = t % tiles_x * TILE, t // tiles_x * TILE
        for k in range(bins.offsets[t], bins.offsets[t + 1]):
            g = bins.flat_ids[k]
            a, b, c = conics[g].astype(np.float64)
            dx, dy = x0 + px + 0.5 - float(means2d[g, 0]), y0 + py + 0.5 - float(means2d[g, 1])
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            draws = (float(opacities[g]) * np.exp(-sigma) >= 1 / 255) & (x0 + px < width) & (y0 + py < height)
            s0, s1, s2, s3 = bins.spans[k]
            in_span = np.where(px < TILE // 2, (py >= s0) & (py < s1), (py >= s2) & (py < s3))
            assert not (draws & ~in_span).any(), (t, g)
            drawn_pixels += int(draws.sum())
            x_lo, x_hi, y_lo, y_hi = bins.boxes[g]
            rows = min(y_hi + 1, y0 + TILE) - max(y_lo, y0)
            for h in range(2):
                if x_lo < x0 + (h + 1) * TILE // 2 and x_hi >= x0 + h * TILE // 2:
                    box_rows += rows
                    span_rows += max(0, int(bins.spans[k][2 * h + 1]) - int(bins.spans[k][2 * h]))
    assert drawn_pixels > 10_000
    assert span_rows < 0.8 * box_rows  # tilted ellipses reach far fewer rows of each half than their box


def test_span_lanes_cover_the_span_in_whole_vectors_inside_its_half() -> None:
    # every row span a half-tile can have, in both halves: the lanes visited hold the span's rows, come in
    # pairs of rows (16 lanes), and never reach into the other half (whose pixels would be drawn twice)
    half_lanes = kernels.HALF * TILE
    for h in range(2):
        for r0 in range(TILE + 1):
            for r1 in range(TILE + 1):
                spans = np.zeros((1, 4), np.int8)
                spans[0, 2 * h], spans[0, 2 * h + 1] = r0, r1
                first, count = kernels.span_lanes(spans, 0, h)
                first, want = int(first), max(r1 - r0, 0) * kernels.HALF
                assert count % 16 == 0 and want <= count < want + 16, (h, r0, r1, count)
                if count:
                    assert h * half_lanes <= first and first + count <= (h + 1) * half_lanes, (h, r0, r1)
                    assert first <= h * half_lanes + r0 * kernels.HALF
                    assert h * half_lanes + r1 * kernels.HALF <= first + count, (h, r0, r1)


def _fresh_asm(fn: numba.core.registry.CPUDispatcher, *args: object) -> str:
    """The machine code of a fresh compile (no cache) of ``fn`` for ``args``, for this machine's CPU."""
    options = {k: v for k, v in fn.targetoptions.items() if k != "nopython"}
    fresh = numba.njit(**{**options, "cache": False})(fn.py_func)
    fresh(*args)
    return fresh.inspect_asm(fresh.signatures[0])


def _vector_floors(asm: str) -> int:
    """Packed float32 rounding on 256/512-bit registers: ``exp_neg``'s range reduction rounds once per pixel,
    so a loop vectorised 8 or 16 lanes wide shows it as a packed instruction; a scalar loop (or one calling
    the C library's ``expf``) has none, and one LLVM left at 4 lanes has it on ``xmm`` registers only."""
    return len(re.findall(r"\bv(?:rndscale|round)ps\s.*%[yz]mm", asm))


def _masked_moves(asm: str) -> int:
    """AVX masked loads and stores (``vmaskmovps``, ``vpmaskmovd``): LLVM writes them where a lane's store is
    conditional. On AMD Zen they made the forward loop 2x slower than the same loop with plain stores."""
    return len(re.findall(r"\bv(?:p)?maskmov", asm))


def _overlap_checks(asm: str) -> int:
    """Flags set from unsigned compares (``setb``): how LLVM writes the runtime test that two arrays do not
    overlap, which it emits before a vectorised loop over several arrays (~36 pointer pairs for the
    forward loop's six arrays, ahead of a loop that runs 3-5 times). One state array needs none."""
    return len(re.findall(r"\bsetb\b", asm))


def test_per_pixel_loops_compile_to_simd() -> None:
    f32 = np.float32
    p = np.random.default_rng(1).random((8, 9)).astype(f32)
    spans = np.tile(np.array([0, 16, 0, 16], np.int8), (8, 1))  # every Gaussian reaches the whole tile
    centres = kernels.pixel_centres(f32)
    forward_state = kernels.tile_state(kernels.FORWARD_SLOTS, centres)
    forward_state[kernels.TRANS * kernels.LANES:] = 1
    backward_state = kernels.tile_state(kernels.BACKWARD_SLOTS, centres)
    backward_state[kernels.TRANS * kernels.LANES:] = 1
    forward = _fresh_asm(kernels.forward_tile, p, spans, 0, 0, forward_state, kernels.LANES)
    backward = _fresh_asm(kernels.backward_tile, p, spans, 8, 0, 0, backward_state, np.zeros((8, 9), f32))
    assert _vector_floors(forward) > 0
    assert _vector_floors(backward) > 0
    # every per-pixel store is unconditional (values chosen by selects), so no pass can turn one into a masked store
    assert _masked_moves(forward) == 0
    assert _masked_moves(backward) == 0
    assert _overlap_checks(forward) == 0
    assert _overlap_checks(backward) == 0

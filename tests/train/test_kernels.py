"""The compositing kernels' building blocks: the vectorisable exp, the radix sort, and that the per-pixel
loops really compile to SIMD code (the speed of CPU training rests on it; a harmless-looking change such
as indexing through views of one buffer silently made them scalar and 7x slower)."""

from __future__ import annotations

import re

import numba
import numpy as np

from spaceport.stages.train import rasterizer_cpu as kernels
from spaceport.stages.train.fast_exp import MAX_X, exp_neg
from spaceport.stages.train.tile_binning import radix_argsort


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


def _vector_floors(fn: numba.core.registry.CPUDispatcher, *args: object) -> int:
    """Packed float32 rounding on 256/512-bit registers in a fresh compile of ``fn`` for ``args``.

    ``exp_neg``'s range reduction rounds once per pixel, so a vectorised loop shows it as a packed
    instruction; a scalar loop (or one calling the C library's ``expf``) has none.
    """
    options = {k: v for k, v in fn.targetoptions.items() if k != "nopython"}
    fresh = numba.njit(**{**options, "cache": False})(fn.py_func)
    fresh(*args)
    asm = fresh.inspect_asm(fresh.signatures[0])
    return len(re.findall(r"\bv(?:rndscale|round)ps\s.*%[yz]mm", asm))


def test_per_pixel_loops_compile_to_simd() -> None:
    f32 = np.float32
    p = np.random.default_rng(1).random((8, 9)).astype(f32)
    box = np.tile(np.array([0, 15, 0, 15], np.int32), (8, 1))  # every Gaussian reaches the whole tile
    lanes = kernels.LANES

    def z() -> np.ndarray:
        return np.zeros(lanes, f32)

    xs, ys = kernels.pixel_centres(f32)
    forward = _vector_floors(kernels.forward_tile, p, box, 0, 0, 16, xs, ys, np.ones(lanes, f32), z(), z(), z(),
                             np.zeros(lanes, np.int32), lanes)
    backward = _vector_floors(kernels.backward_tile, p, box, 8, 0, 0, 16, xs, ys, np.full(lanes, 8, np.int32),
                              np.ones(lanes, f32), z(), z(), z(), z(), np.zeros((8, 9), f32))
    assert forward > 0
    assert backward > 0

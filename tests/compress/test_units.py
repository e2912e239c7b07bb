"""The building blocks: codebooks, attribute encodings, Morton order, k-means, the palette search, PLAS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spaceport.stages.compress import attributes as attr
from spaceport.stages.compress.codebook import encode, nearest, optimal_codebook
from spaceport.stages.compress.kmeans import assign, kmeans
from spaceport.stages.compress.ordering import morton_codes, morton_order
from spaceport.stages.compress.palette import build_palette, splat_transform_size
from spaceport.stages.compress.plas import plas_sort
from tests.compress.helpers import rotation_angle_deg


def test_codebook_matches_brute_force_optimum_on_few_values() -> None:
    # With no more distinct values than levels, the optimum is exact: zero error.
    values = np.repeat(np.linspace(-3, 2, 200), 5)
    cb = optimal_codebook(values)
    assert len(cb) == 256 and np.all(np.diff(cb) >= 0)
    assert np.abs(cb[encode(cb, values)] - values).max() < 1e-6


def test_codebook_beats_uniform_quantiser_on_skewed_data() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-4, 0.3, 50_000), rng.normal(1, 0.05, 5_000)])
    cb = optimal_codebook(values, weight_power=1.0)
    uniform = np.linspace(values.min(), values.max(), 256)
    ours = np.sqrt(np.mean((cb[nearest(cb, values)] - values) ** 2))
    flat = np.sqrt(np.mean((uniform[nearest(uniform, values)] - values) ** 2))
    assert ours < 0.6 * flat


def test_means_are_rounded_to_the_nearest_16_bit_step() -> None:
    rng = np.random.default_rng(1)
    means = rng.normal(0, 30, (5000, 3)).astype(np.float32)
    low, high, mins, maxs = attr.encode_means(means)
    decoded = attr.decode_means(low, high, mins, maxs)
    step = (np.asarray(maxs) - np.asarray(mins)) / 65535
    err = np.abs(attr.log_transform(decoded.astype(np.float64)) - attr.log_transform(means.astype(np.float64)))
    assert np.all(err <= step / 2 + 1e-6)  # truncation would reach a whole step
    assert np.all(err.max(0) > step / 4)  # ...and the bound is tight, so it is really rounding


def test_quaternions_smallest_three_round_trip() -> None:
    rng = np.random.default_rng(2)
    q = rng.normal(size=(20000, 4)).astype(np.float32)
    texels = attr.encode_quats(q)
    assert set(np.unique(texels[:, 3])) <= {252, 253, 254, 255}
    decoded = attr.decode_quats(texels)
    assert rotation_angle_deg(q, decoded).max() < 1.2  # 3 components at 1/(255·sqrt2) each


def test_morton_order_follows_the_z_curve() -> None:
    pts = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float64)
    assert morton_order(pts).tolist() == [1, 2, 3, 0]
    codes = morton_codes(np.random.default_rng(3).random((1000, 3)))
    assert len(np.unique(codes)) == 1000


def test_kmeans_is_seeded_and_assigns_to_the_nearest_centroid() -> None:
    data = np.random.default_rng(0).normal(size=(3000, 9)).astype(np.float32)
    a, b = kmeans(data, 200, 5, seed=7), kmeans(data, 200, 5, seed=7)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    labels, _ = assign(data, a.centroids)
    assert np.array_equal(labels, a.labels)
    # two-level path: every label valid, error below one coarse level alone
    big = kmeans(data, 2000, 5, seed=1)
    coarse = kmeans(data, 45, 5, seed=1)
    assert len(big.centroids) == 2000 and int(big.labels.max()) < 2000
    assert big.sse < 0.5 * coarse.sse


def test_palette_grows_until_the_error_target_and_respects_the_cap() -> None:
    rng = np.random.default_rng(4)
    shn = (rng.normal(size=(5000, 2)) @ rng.normal(size=(2, 45))).reshape(5000, 15, 3).astype(np.float32)
    loose = build_palette(shn, target_error=0.5, iterations=4)
    tight = build_palette(shn, target_error=0.0, iterations=4)
    assert loose.size == 1024 and loose.colour_error <= 0.5
    assert tight.size == splat_transform_size(5000) == 4096
    assert [s for s, _ in tight.tried] == [1024, 2048, 4096]
    assert tight.colour_error < loose.colour_error
    assert tight.labels.shape == (5000,) and tight.centroids.shape == (4096, 15, 3)


def test_plas_sorts_a_grid_by_swaps_only() -> None:
    gen = torch.Generator().manual_seed(0)
    grid = torch.rand(32, 48, 3, generator=gen)
    index = plas_sort(grid, seed=3)
    assert sorted(index.reshape(-1).tolist()) == list(range(32 * 48))
    out = grid.reshape(-1, 3)[index.reshape(-1)].reshape(32, 48, 3)

    def roughness(g: torch.Tensor) -> float:
        return float((g[1:] - g[:-1]).abs().mean() + (g[:, 1:] - g[:, :-1]).abs().mean())

    assert roughness(out) < 0.4 * roughness(grid)
    assert torch.equal(index, plas_sort(grid, seed=3))


def test_webp_is_lossless_and_keeps_colour_under_zero_alpha() -> None:
    from spaceport.stages.compress.webp import decode_rgba, encode_rgba

    pixels = np.random.default_rng(5).integers(0, 256, (12, 20, 4), dtype=np.uint8)
    pixels[:, :5, 3] = 0  # fully transparent texels: a transparent splat's colour must survive
    assert np.array_equal(decode_rgba(encode_rgba(pixels)), pixels)


def test_two_level_kmeans_survives_many_identical_rows() -> None:
    # A trained scene's untouched SH coefficients stay at zero: most rows identical. The coarse level
    # then holds duplicate centroids, which once left a cluster with no candidate fine centroids.
    rng = np.random.default_rng(3)
    for varied in (0, 27):
        data = np.zeros((27_000, 9), np.float32)
        data[:varied] = rng.normal(size=(varied, 9)) * 0.01
        result = kmeans(data, 1024, iterations=3, seed=0)
        assert result.labels.shape == (27_000,) and int(result.labels.max()) < len(result.centroids)
        err = ((data - result.centroids[result.labels]) ** 2).sum(1)
        assert float(err[varied:].max()) < 1e-9  # the zero rows sit on an exact centroid


def _best_max_error(values: np.ndarray, levels: int = 256) -> float:
    """The smallest largest error any ``levels``-entry codebook can have (greedy cover + bisection)."""
    v = np.sort(values.astype(np.float64).ravel())
    lo, hi = 0.0, float(v[-1] - v[0])
    for _ in range(60):
        mid, i, runs = 0.5 * (lo + hi), 0, 0
        while i < len(v) and runs <= levels:
            i = int(np.searchsorted(v, v[i] + 2 * mid, side="right"))
            runs += 1
        lo, hi = (lo, mid) if runs <= levels else (mid, hi)
    return hi


def test_codebook_bounds_the_largest_error_at_little_rms_cost() -> None:
    # log-scale-like values: a normal core with long sparse tails, where a least-squares codebook lets
    # a few entries cover the tails (the largest error then grows with the scene)
    rng = np.random.default_rng(6)
    values = np.concatenate([rng.normal(-4, 0.5, 200_000), rng.laplace(-4, 1.0, 2_000)])
    cb = optimal_codebook(values)
    loose = optimal_codebook(values, bounds=(20.0,))  # practically unbounded: the least-squares one
    err, loose_err = (np.abs(c.astype(np.float64)[nearest(c, values)] - values) for c in (cb, loose))
    best = _best_max_error(values)
    bin_width = (values.max() - values.min()) / 2048
    assert err.max() <= 4 * best + bin_width  # the ladder's loosest bound, in units of the best possible
    assert err.max() < 0.6 * loose_err.max()
    assert np.sqrt(np.mean(err ** 2)) <= 1.03 * np.sqrt(np.mean(loose_err ** 2))
    # one explicit bound holds exactly (the clamped Lloyd passes keep every value within it)
    tight = optimal_codebook(values, bounds=(2.0,))
    assert np.abs(tight.astype(np.float64)[nearest(tight, values)] - values).max() <= 2 * best + bin_width


def test_kmeans_plus_plus_seeds_find_every_blob() -> None:
    # 60 tight, well-separated blobs: random seeds leave some blobs without a centroid; D² seeding does not
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(60, 12)) * 10
    data = (centres[rng.integers(0, 60, 6000)] + rng.normal(size=(6000, 12)) * 0.01).astype(np.float32)
    result = kmeans(data, 60, iterations=3, seed=0)
    nearest_centre = ((result.centroids[:, None, :] - centres[None]) ** 2).sum(-1).min(1)
    assert float(nearest_centre.max()) < 1e-2 and result.sse < 6000 * 12 * 1e-3


def test_palette_codebook_costs_at_most_one_percent_rms() -> None:
    from spaceport.stages.compress.palette import CODEBOOK_RMS_COST, palette_codebook
    from spaceport.stages.compress.synthetic import synthetic_scene

    shn = synthetic_scene(6000, 3, seed=2).shN
    pal = build_palette(shn, target_error=0.0, iterations=4)
    cb = palette_codebook(pal)
    assert len(cb) == 256 and np.all(np.diff(cb) >= 0)
    decoded = cb[encode(cb, pal.centroids)][pal.labels]
    palette_sse = float(((pal.centroids[pal.labels] - shn) ** 2).sum())
    assert pal.sse == pytest.approx(palette_sse, rel=1e-2)  # from the last assignment: an upper bound
    assert float(((decoded - shn) ** 2).sum()) <= (1 + CODEBOOK_RMS_COST) ** 2 * palette_sse * 1.005
    assert len(np.unique(cb)) < 256  # fewer, evenly spread entries: cheaper indices


def test_morton_encoding_imports_neither_torch_nor_numba() -> None:
    # ~2 and ~1.4 CPU-seconds of start-up: the stage of a small scene costs less than that without them
    import subprocess
    import sys

    code = ("import sys; from spaceport.api import CompressOptions; "
            "from spaceport.stages.compress.pipeline import encode_scene; "
            "from spaceport.stages.compress.synthetic import synthetic_scene; "
            "encode_scene(synthetic_scene(3000, 3), CompressOptions(ordering='morton', device='cpu', "
            "kmeans_iterations=2)); print(sorted(m for m in ('torch', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_quality_views_take_the_held_out_cameras_first() -> None:
    from spaceport.stages.compress.quality import pick_views
    from spaceport.stages.train.render import Camera

    cams = [Camera(f"IMG_{i:04d}.jpg", 32, 24, 30.0, 30.0, 16.0, 12.0, np.eye(4), held_out=i % 8 == 0)
            for i in range(40)]
    picked = [c.name for c in pick_views(cams, 4)]
    assert picked == ["IMG_0000.jpg", "IMG_0008.jpg", "IMG_0016.jpg", "IMG_0024.jpg"]  # 4 of the 5 held out
    seven = pick_views(cams, 7)
    assert sum(c.held_out for c in seven) == 5 and len({c.name for c in seven}) == 7
    assert len(pick_views(cams, 100)) == 40

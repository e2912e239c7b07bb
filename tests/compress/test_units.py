"""The building blocks: codebooks, attribute encodings, Morton order, k-means, the palette search, PLAS."""

from __future__ import annotations

import numpy as np
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
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(3000, 9, generator=gen)
    a, b = kmeans(data, 200, 5, seed=7), kmeans(data, 200, 5, seed=7)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    labels, _ = assign(data, a.centroids)
    assert torch.equal(labels, a.labels)
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
    gen = torch.Generator().manual_seed(3)
    for varied in (0, 27):
        data = torch.zeros(27_000, 9)
        data[:varied] = torch.randn(varied, 9, generator=gen) * 0.01
        result = kmeans(data, 1024, iterations=3, seed=0)
        assert result.labels.shape == (27_000,) and int(result.labels.max()) < len(result.centroids)
        err = ((data - result.centroids[result.labels]) ** 2).sum(1)
        assert float(err[varied:].max()) < 1e-9  # the zero rows sit on an exact centroid

"""The SH palette: k-means over the higher-band SH vectors, sized by measured error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spaceport.stages.compress.codebook import LEVELS, nearest, optimal_codebook, pad
from spaceport.stages.compress.kmeans import kmeans

MIN_PALETTE = 1024
MAX_PALETTE = 65536
"""16-bit labels address at most 65,536 entries."""
CODEBOOK_LEVELS = (128, 160, 192, 224)
"""Entry counts tried for the palette's 8-bit codebook before the full 256 (fewest first)."""
CODEBOOK_RMS_COST = 0.01
"""How much the codebook may raise the palette's RMS error (measured at 15k splats: 192 levels +0.5%)."""


@dataclass
class ShPalette:
    centroids: np.ndarray  # [P, K, 3] float32
    labels: np.ndarray  # [N] int64
    colour_error: float  # RMS colour change (0..1 units) the palette causes, averaged over view directions
    tried: list[tuple[int, float]] = field(default_factory=list)  # (size, colour error) per attempt
    sse: float = 0.0  # squared error of the splats' SH vectors against their entries

    @property
    def size(self) -> int:
        return len(self.centroids)


def splat_transform_size(n: int) -> int:
    """The palette size splat-transform picks: min(64, 2^floor(log2(N/1024)))·1024."""
    if n < 1024:
        return MIN_PALETTE
    return min(64, 2 ** int(np.floor(np.log2(n / 1024)))) * 1024


def colour_rmse(sse: float, n: int) -> float:
    """RMS colour error over splats, channels and view directions, from the SH vectors' squared error.

    The real SH basis is orthonormal over the sphere, so a coefficient error e changes a colour by a
    function whose mean square over directions is e²/(4π): the palette's effect on pixels, in 0..1
    colour units, comparable across scenes (unlike an error relative to the SH spread).
    """
    return float(np.sqrt(sse / max(n, 1) / 3 / (4 * np.pi)))


def build_palette(
    shn: np.ndarray,
    *,
    target_error: float,
    max_size: int = MAX_PALETTE,
    iterations: int = 10,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[float], None] | None = None,
) -> ShPalette:
    """Double the palette from 1024 entries until its colour error is ≤ ``target_error`` (or the cap).

    The cap is splat-transform's size for this many splats (never more than ``max_size`` or N), so we
    never spend more bytes on the palette than it does, and usually far fewer.
    """
    n, k = shn.shape[0], shn.shape[1]
    data = np.ascontiguousarray(shn.reshape(n, k * 3), dtype=np.float32)
    cap = max(1, min(max_size, splat_transform_size(n), n))
    size, tried = min(MIN_PALETTE, cap), []
    steps = max(1, int(np.ceil(np.log2(cap / size))) + 1)
    while True:
        result = kmeans(data, size, iterations, seed, device=device)
        err = colour_rmse(result.sse, n)
        tried.append((len(result.centroids), err))
        if progress:
            progress(min(1.0, len(tried) / steps))
        if err <= target_error or size >= cap:
            break
        size = min(cap, size * 2)
    return ShPalette(result.centroids.reshape(-1, k, 3), result.labels, err, tried, result.sse)


def palette_codebook(palette: ShPalette) -> np.ndarray:
    """The 256-entry codebook over the palette's values, with as few distinct entries as keep the splats'
    SH error within ``CODEBOOK_RMS_COST`` of the palette's own.

    The centroid texture is most of a .sog and its bytes barely compress: their cost is the entropy of
    the indices. Fewer entries, spread evenly over the range (weight power 0), lower it: measured at 15k
    splats, 8192 entries: 352 KB with the least-squares 256-entry codebook, 283 KB with 160 even ones,
    for SH RMSE / spread 0.1460 → 0.1470. The codebook's error adds to the palette's (each entry is the
    mean of its splats, so the cross term vanishes): sum over entries of members x squared error.
    """
    values = palette.centroids.reshape(palette.size, -1).astype(np.float64)
    members = np.bincount(palette.labels, minlength=palette.size).astype(np.float64)
    budget = ((1 + CODEBOOK_RMS_COST) ** 2 - 1) * palette.sse
    for levels in CODEBOOK_LEVELS if budget > 0 else ():  # an exact palette (one splat per entry) has none
        cb = optimal_codebook(values, levels=levels, weight_power=0.0, bounds=(2.0,))
        err = cb.astype(np.float64)[nearest(cb, values)] - values
        if float(members @ (err * err).sum(1)) <= budget:
            return pad(cb)
    return optimal_codebook(values, levels=LEVELS, weight_power=0.0, bounds=(2.0,))

"""The SH palette: k-means over the higher-band SH vectors, sized by measured error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from spaceport.stages.compress.kmeans import kmeans

MIN_PALETTE = 1024
MAX_PALETTE = 65536
"""16-bit labels address at most 65,536 entries."""


@dataclass
class ShPalette:
    centroids: np.ndarray  # [P, K, 3] float32
    labels: np.ndarray  # [N] int64
    colour_error: float  # RMS colour change (0..1 units) the palette causes, averaged over view directions
    tried: list[tuple[int, float]] = field(default_factory=list)  # (size, colour error) per attempt

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
    data = torch.from_numpy(np.ascontiguousarray(shn.reshape(n, k * 3), dtype=np.float32)).to(device)
    cap = max(1, min(max_size, splat_transform_size(n), n))
    size, tried = min(MIN_PALETTE, cap), []
    steps = max(1, int(np.ceil(np.log2(cap / size))) + 1)
    while True:
        result = kmeans(data, size, iterations, seed)
        err = colour_rmse(result.sse, n)
        tried.append((len(result.centroids), err))
        if progress:
            progress(min(1.0, len(tried) / steps))
        if err <= target_error or size >= cap:
            break
        size = min(cap, size * 2)
    centroids = result.centroids.cpu().numpy().reshape(-1, k, 3)
    return ShPalette(centroids, result.labels.cpu().numpy(), err, tried)

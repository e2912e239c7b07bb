"""A 256-entry scalar codebook by the 1-D optimal quantiser, and lookups into it.

The optimum over a histogram is exact dynamic programming: with prefix sums of the bin weights, the
squared error of any run of bins is O(1), so the whole search is O(levels·bins²) simple steps
(compiled with numba: ~0.1 s). Entries are then refined to the weighted mean of the real values
they cover, and every value maps to its nearest entry (not its bin's), which keeps the error honest.
"""

from __future__ import annotations

import numba
import numpy as np

HIST_BINS = 1024
LEVELS = 256


def optimal_codebook(values: np.ndarray, levels: int = LEVELS, bins: int = HIST_BINS,
                     weight_power: float = 0.5) -> np.ndarray:
    """``levels`` sorted float32 entries minimising weighted squared error over a histogram.

    ``weight_power`` < 1 flattens dense regions (bin weight = count**power) so the tails keep entries.
    """
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return np.zeros(levels, np.float32)
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-12:
        return np.full(levels, lo, np.float32)
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    used = counts > 0
    xs, ws = centres[used], counts[used].astype(np.float64) ** weight_power
    m = len(xs)
    if m <= levels:
        return _pad(_refine(v, xs), levels)
    # prefix sums: cost(i, j) of bins i..j-1 = S2 - S1^2 / S0
    s0 = np.concatenate([[0.0], np.cumsum(ws)])
    s1 = np.concatenate([[0.0], np.cumsum(ws * xs)])
    s2 = np.concatenate([[0.0], np.cumsum(ws * xs * xs)])
    bounds = _dp_segments(s0, s1, s2, levels)
    ends = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    seg_means = np.array([(s1[b] - s1[a]) / (s0[b] - s0[a]) for a, b in ends if b > a])
    return _pad(_refine(v, seg_means), levels)


def _pad(entries: np.ndarray, levels: int) -> np.ndarray:
    return np.concatenate([entries, np.full(levels - len(entries), entries[-1])]).astype(np.float32)


@numba.njit(cache=True)
def _dp_segments(s0: np.ndarray, s1: np.ndarray, s2: np.ndarray, levels: int) -> np.ndarray:
    """Boundaries [levels + 1] of the optimal split of m bins into ``levels`` runs (O(levels·m²))."""
    m = len(s0) - 1
    inf = np.inf
    dp = np.full(m + 1, inf)
    for j in range(1, m + 1):
        w = s0[j]
        dp[j] = s2[j] - s1[j] * s1[j] / w if w > 0 else 0.0
    back = np.zeros((levels, m + 1), np.int64)
    for k in range(1, levels):
        new = np.full(m + 1, inf)
        for j in range(k + 1, m + 1):
            best, arg = inf, k
            for i in range(k, j):
                w = s0[j] - s0[i]
                a = s1[j] - s1[i]
                c = s2[j] - s2[i] - (a * a / w if w > 0 else 0.0)
                if c < 0:
                    c = 0.0
                v = dp[i] + c
                if v < best:
                    best, arg = v, i
            new[j], back[k, j] = best, arg
        dp = new
    bounds = np.zeros(levels + 1, np.int64)
    bounds[levels] = m
    j = m
    for k in range(levels - 1, 0, -1):
        j = back[k, j]
        bounds[k] = j
    return bounds


def _refine(v: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """One Lloyd step on the real values: each entry becomes the mean of the values nearest to it."""
    entries = np.unique(entries)
    idx = nearest(entries, v)
    sums = np.bincount(idx, weights=v, minlength=len(entries))
    counts = np.bincount(idx, minlength=len(entries))
    out = np.where(counts > 0, sums / np.maximum(counts, 1), entries)
    return np.sort(out)


def nearest(codebook: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of a sorted codebook for every value (any shape)."""
    cb = np.asarray(codebook, np.float64)
    mids = 0.5 * (cb[1:] + cb[:-1])
    return np.searchsorted(mids, np.asarray(values, np.float64), side="left").astype(np.int64)


def encode(codebook: np.ndarray, values: np.ndarray) -> np.ndarray:
    return nearest(codebook, values).astype(np.uint8)

"""A 256-entry scalar codebook by the 1-D optimal quantiser, and lookups into it.

The optimum over a histogram is exact dynamic programming: with prefix sums of the bin weights, the
squared error of any run of bins is O(1), and the best split points are monotone, so the search takes
milliseconds in numba. Entries are then refined to the mean of the real values nearest to them, and
every value maps to its nearest entry (not its bin's), which keeps the error honest.
"""

from __future__ import annotations

import numba
import numpy as np

HIST_BINS = 2048
LEVELS = 256


def optimal_codebook(values: np.ndarray, levels: int = LEVELS, bins: int = HIST_BINS,
                     weight_power: float = 0.75) -> np.ndarray:
    """``levels`` sorted float32 entries minimising weighted squared error over a histogram.

    ``weight_power`` < 1 flattens dense regions (bin weight = count**power) so the tails keep entries.
    0.75 measured against splat-transform's 0.5 on synthetic scenes: median error of scales and colour
    down ~6%, the largest scale error up ~0-15%.
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
def _cost(s0: np.ndarray, s1: np.ndarray, s2: np.ndarray, i: int, j: int) -> float:
    w = s0[j] - s0[i]
    if w <= 0:
        return 0.0
    a = s1[j] - s1[i]
    c = s2[j] - s2[i] - a * a / w
    return c if c > 0 else 0.0


@numba.njit(cache=True)
def _dp_segments(s0: np.ndarray, s1: np.ndarray, s2: np.ndarray, levels: int) -> np.ndarray:
    """Boundaries [levels + 1] of the optimal split of m bins into ``levels`` runs.

    The 1-D squared-error cost obeys the quadrangle inequality, so the best split point is monotone
    (Knuth): opt[k-1][j] <= opt[k][j] <= opt[k][j+1]. Searching only that window makes the whole DP
    about O(m²) instead of O(levels·m²), which is what allows a fine histogram.
    """
    m = len(s0) - 1
    inf = np.inf
    dp = np.full(m + 1, inf)
    for j in range(1, m + 1):
        dp[j] = _cost(s0, s1, s2, 0, j)
    back = np.zeros((levels, m + 1), np.int64)
    opt_prev = np.zeros(m + 2, np.int64)  # opt[k-1][j]; level 0 always starts at 0
    for k in range(1, levels):
        new = np.full(m + 1, inf)
        opt = np.zeros(m + 2, np.int64)
        opt[m + 1] = m
        for j in range(m, k, -1):
            lo = max(opt_prev[j], k)
            hi = min(opt[j + 1], j - 1)
            best, arg = inf, lo
            for i in range(lo, hi + 1):
                v = dp[i] + _cost(s0, s1, s2, i, j)
                if v < best:
                    best, arg = v, i
            new[j], back[k, j], opt[j] = best, arg, arg
        dp = new
        opt_prev = opt
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

"""A 256-entry scalar codebook with a bounded largest error, and lookups into it.

Plain MSE-optimal quantisers (and splat-transform's count^0.5-weighted one) let a few entries cover the
sparse tails, so the largest error of a scale or colour grows with the scene. Here the codebook is the
least-squares one among those whose largest error is at most ``B = c·B*``, where ``B*`` is the best
largest error any 256-entry codebook can reach on these values (found exactly by a greedy cover):

1. Histogram (2048 bins) of the sorted values; each bin keeps its count, sum, square sum, min and max,
   so a run of bins has an exact squared error and an exact span.
2. Dynamic programming over bins: the least squared error split into 256 runs, each spanning ≤ 2B.
   The span limit bounds how many bins a run may hold, so one level is an [m, W] array step in numpy.
3. Each entry is its run's mean, clamped to within B of both ends; then Lloyd passes on the real values,
   clamped the same way, which keep every value within B of its entry (the cell of an entry lies within
   B of it, so the clamp range is never empty) while lowering the squared error.

``c`` is the tightest of ``BOUND_LADDER`` whose RMS error is within ``RMS_TOLERANCE`` of a loosely bound
one (c = ``REFERENCE_BOUND``, practically the MSE optimum), so the bound costs at most 2% RMS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

HIST_BINS = 2048
LEVELS = 256
BOUND_LADDER = (2.0, 2.5, 3.0, 4.0)
"""Candidate bounds, in units of the best possible largest error B*; the last one is the fallback."""
REFERENCE_BOUND = 6.0
RMS_TOLERANCE = 0.02
"""RMS error a tighter bound may cost over the reference (measured: c = 2..4 cost 0.5-2%)."""
LLOYD_PASSES = 10


@dataclass
class _Bins:
    lo: np.ndarray  # [m] smallest value in each non-empty bin
    hi: np.ndarray  # [m] largest value
    count: np.ndarray  # [m] float64
    total: np.ndarray  # [m] sum of values
    squares: np.ndarray  # [m] sum of squared values


def _bins(v: np.ndarray, bins: int) -> _Bins:
    """Non-empty bins of sorted values ``v``."""
    lo, hi = v[0], v[-1]
    b = np.minimum(bins - 1, ((v - lo) * (bins / (hi - lo))).astype(np.int64))
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], len(v)]
    c1, c2 = np.r_[0.0, np.cumsum(v)], np.r_[0.0, np.cumsum(v * v)]
    return _Bins(v[starts], v[ends - 1], (ends - starts).astype(np.float64), c1[ends] - c1[starts],
                 c2[ends] - c2[starts])


def _runs_needed(bins: _Bins, bound: float, limit: int) -> int:
    """Fewest runs of bins each spanning ≤ 2·bound (greedy is optimal for interval covers), up to limit+1."""
    after = np.searchsorted(bins.hi, bins.lo + 2 * bound, side="right").tolist()  # first bin after a run
    i, runs, m = 0, 0, len(after)
    while i < m and runs <= limit:
        i = after[i]
        runs += 1
    return runs


def best_max_error(bins: _Bins, levels: int) -> float:
    """B*: the smallest half-span such that ``levels`` runs of bins cover every bin (bisection)."""
    lo, hi = 0.0, 0.5 * float(bins.hi[-1] - bins.lo[0])
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _runs_needed(bins, mid, levels) <= levels:
            hi = mid
        else:
            lo = mid
    return hi


def _split(bins: _Bins, levels: int, bound: float, weight_power: float) -> np.ndarray:
    """Boundaries [levels + 1] of the least-squares split into ``levels`` runs each spanning ≤ 2·bound."""
    m = len(bins.count)
    # points are the bin means; weight count**p (p = 1: the exact squared error of the real values)
    w = bins.count ** weight_power
    s0, s1 = np.r_[0.0, np.cumsum(w)], np.r_[0.0, np.cumsum(w * bins.total / bins.count)]
    s2 = np.r_[0.0, np.cumsum(bins.squares / bins.count * w)]
    first = np.searchsorted(bins.lo, bins.hi - 2 * bound, side="left")  # earliest start for each last bin
    ends = np.arange(1, m + 1)
    width = int((ends - first).max())
    # row r (the run ending after bin r), column q: the run starting at bin r + 1 - width + q
    starts = ends[:, None] - width + np.arange(width)[None, :]  # [m, W]
    ok = starts >= first[:, None]
    st = np.where(ok, starts, 0)
    ws, a = s0[ends, None] - s0[st], s1[ends, None] - s1[st]
    cost = np.where(ok, np.maximum(s2[ends, None] - s2[st] - a * a / np.where(ws > 0, ws, 1.0), 0.0), np.inf)
    back = np.zeros((levels, m + 1), np.int32)
    # padded[width + i] = best cost of bins [0, i) so far; a sliding window of it is each row's dp[starts]
    padded = np.full(m + width + 1, np.inf)
    padded[width] = 0.0
    rows = np.arange(m)
    for k in range(levels):
        cand = sliding_window_view(padded[1:], width)[:m] + cost  # [m, W]
        arg = cand.argmin(1)
        padded[width + 1:] = cand[rows, arg]
        padded[width] = np.inf
        back[k, 1:] = ends - width + arg
    bounds = np.empty(levels + 1, np.int64)
    bounds[levels] = j = m
    for k in range(levels - 1, -1, -1):
        j = int(back[k, j])
        bounds[k] = j
    return bounds


def _cells(v: np.ndarray, c1: np.ndarray, c2: np.ndarray, e: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Cells of sorted entries ``e`` over sorted values: (start, end, count, sum, squared error)."""
    cut = np.searchsorted(v, 0.5 * (e[1:] + e[:-1]), side="left")
    a, b = np.r_[0, cut], np.r_[cut, len(v)]
    n, s = b - a, c1[b] - c1[a]
    sse = float(np.sum(c2[b] - c2[a] - 2 * e * s + n * e * e))
    return a, b, n, s, max(sse, 0.0)


def _lloyd(v: np.ndarray, c1: np.ndarray, c2: np.ndarray, entries: np.ndarray, bound: float,
           passes: int) -> tuple[np.ndarray, float]:
    """Clamped Lloyd passes on sorted values (prefix sums c1, c2); returns (entries, squared error)."""
    e = np.sort(entries)
    a, b, n, s, sse = _cells(v, c1, c2, e)
    for _ in range(passes):
        full = n > 0
        mean = s / np.maximum(n, 1)
        top, bottom = v[np.maximum(b - 1, 0)], v[np.minimum(a, len(v) - 1)]
        moved = np.where(full, np.clip(mean, top - bound, bottom + bound), e)
        if np.array_equal(moved, e):
            break
        e = np.sort(moved)
        a, b, n, s, sse = _cells(v, c1, c2, e)
    return e, sse


def optimal_codebook(values: np.ndarray, levels: int = LEVELS, bins: int = HIST_BINS,
                     weight_power: float = 1.0, bounds: tuple[float, ...] = BOUND_LADDER) -> np.ndarray:
    """``levels`` sorted float32 entries: least squared error under a bounded largest error.

    ``weight_power`` < 1 weights each histogram bin by count**power in the split (as splat-transform
    does with 0.5); 1 (the default) is the real squared error, since the bound already protects the tails.
    0 spreads the entries evenly over the occupied range, which makes the indices cheaper to store.
    ``bounds``: candidate bounds in units of B* (module docstring); with one, no reference is solved.
    """
    v = np.sort(np.asarray(values, np.float64).ravel())
    if v.size == 0:
        return np.zeros(levels, np.float32)
    if not np.isfinite(v[[0, -1]]).all():
        raise ValueError("codebook values must be finite")
    distinct = v[np.r_[True, v[1:] != v[:-1]]]
    if len(distinct) <= levels:
        return pad(distinct, levels)
    hist = _bins(v, bins)
    c1, c2 = np.r_[0.0, np.cumsum(v)], np.r_[0.0, np.cumsum(v * v)]
    if len(hist.count) <= levels:  # every bin its own entry: errors under one bin width
        entries, _ = _lloyd(v, c1, c2, hist.total / hist.count, float(v[-1] - v[0]), LLOYD_PASSES)
        return pad(entries, levels)
    best = best_max_error(hist, levels)

    def solve(c: float) -> tuple[np.ndarray, float]:
        bound = c * best
        cuts = _split(hist, levels, bound, weight_power)
        a, b = cuts[:-1], cuts[1:]
        a, b = a[b > a], b[b > a]
        cs, cn = np.r_[0.0, np.cumsum(hist.total)], np.r_[0.0, np.cumsum(hist.count)]
        mean = (cs[b] - cs[a]) / (cn[b] - cn[a])
        start = np.clip(mean, hist.hi[b - 1] - bound, hist.lo[a] + bound)
        return _lloyd(v, c1, c2, start, bound, LLOYD_PASSES)

    reference = solve(REFERENCE_BOUND)[1] if len(bounds) > 1 else np.inf
    for c in bounds:
        entries, sse = solve(c)
        if sse <= (1 + RMS_TOLERANCE) ** 2 * reference or c == bounds[-1]:
            break
    return pad(entries, levels)


def pad(entries: np.ndarray, size: int = LEVELS) -> np.ndarray:
    """Entries repeated at the end up to ``size`` (a SOG codebook always has 256)."""
    return np.concatenate([entries, np.full(size - len(entries), entries[-1])]).astype(np.float32)


def nearest(codebook: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of a sorted codebook for every value (any shape)."""
    cb = np.asarray(codebook, np.float64)
    mids = 0.5 * (cb[1:] + cb[:-1])
    return np.searchsorted(mids, np.asarray(values, np.float64), side="left").astype(np.int64)


def encode(codebook: np.ndarray, values: np.ndarray) -> np.ndarray:
    return nearest(codebook, values).astype(np.uint8)

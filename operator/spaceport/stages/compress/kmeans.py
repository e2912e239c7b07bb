"""Seeded k-means in torch (the same code runs on CPU and CUDA) for the SH palette.

Exact k-means costs N·k·D per pass: 1M splats into 16k centroids of 45 floats is ~1.5 TFLOP, minutes
per pass on 2 cores. Above ``FLAT_MAX`` centroids we use two levels instead: ~sqrt(k) coarse clusters,
then each coarse cluster gets fine centroids in proportion to its size and runs its own small k-means.
A pass then costs N·(sqrt(k) + k/sqrt(k))·D, a few hundred times less, for a slightly higher error
(points near a coarse boundary may miss their globally nearest centroid).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

FLAT_MAX = 256
TRAIN_POINTS_PER_CENTROID = 64
"""Flat k-means trains on a sample of at most this many points per centroid, then assigns everyone."""
REFINE_PASSES = 2
REFINE_PROBES = 4
CHUNK_ELEMENTS = 1 << 24
"""Entries of one distance block (64 MB of float32)."""


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # [k, D]
    labels: torch.Tensor  # [N] int64
    sse: float  # sum of squared distances to the assigned centroid


def assign(data: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid (L2) of every row, and the squared distance, in bounded-memory chunks."""
    n, k = len(data), len(centroids)
    c_sq = (centroids * centroids).sum(1)
    labels = torch.empty(n, dtype=torch.int64, device=data.device)
    dist = torch.empty(n, dtype=data.dtype, device=data.device)
    step = max(1, CHUNK_ELEMENTS // max(k, 1))
    for a in range(0, n, step):
        x = data[a:a + step]
        d = torch.addmm(c_sq[None, :], x, centroids.T, alpha=-2.0)  # |c|^2 - 2 x.c
        best, idx = d.min(1)
        labels[a:a + step] = idx
        dist[a:a + step] = (best + (x * x).sum(1)).clamp_min(0)
    return labels, dist


def _flat(data: torch.Tensor, k: int, iterations: int, gen: torch.Generator) -> KMeansResult:
    n = len(data)
    if k >= n:
        return KMeansResult(data.clone(), torch.arange(n, device=data.device), 0.0)
    full = data
    if n > TRAIN_POINTS_PER_CENTROID * k:
        # centroids settle long before every point is seen; the sample keeps passes cheap at 1M splats
        data = data[torch.randperm(n, generator=gen)[: TRAIN_POINTS_PER_CENTROID * k].to(data.device)]
    init = torch.randperm(len(data), generator=gen, device="cpu")[:k].to(data.device)
    centroids = data[init].clone()
    labels, dist = assign(data, centroids)
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, labels, data)
        counts = torch.bincount(labels, minlength=k).to(data.dtype)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
        if bool(empty.any()):
            # re-seed empty clusters on the worst-fitted points so no palette entry is wasted
            worst = torch.topk(dist, int(empty.sum())).indices
            centroids[empty] = data[worst]
        labels, dist = assign(data, centroids)
    if full is not data:
        labels, dist = assign(full, centroids)
    return KMeansResult(centroids, labels, float(dist.sum()))


def _allocate(weights: list[float], sizes: list[int], k: int) -> list[int]:
    """Split k centroids over clusters in proportion to ``weights`` (largest remainder, ≤ size, ≥ 1)."""
    total = sum(w for w, s in zip(weights, sizes, strict=True) if s) or 1.0
    share = [k * w / total if s else 0.0 for w, s in zip(weights, sizes, strict=True)]
    alloc = [min(s, max(1 if s else 0, math.floor(x))) for s, x in zip(sizes, share, strict=True)]
    left = k - sum(alloc)
    order = sorted(range(len(sizes)), key=lambda i: share[i] - alloc[i], reverse=True)
    while left > 0:
        moved = False
        for i in order:
            if left and alloc[i] < sizes[i]:
                alloc[i] += 1
                left -= 1
                moved = True
        if not moved:
            break
    while left < 0:  # the ≥ 1 floor overshot: take back from the largest allocations
        i = max(range(len(alloc)), key=lambda j: alloc[j])
        alloc[i] -= 1
        left += 1
    return alloc


def _refine_across(data: torch.Tensor, coarse: KMeansResult, centroids: torch.Tensor, owner: torch.Tensor,
                  labels: torch.Tensor, passes: int, probes: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd passes where each point may also take a fine centroid of the ``probes`` coarse clusters
    nearest its own: fixes most points that sat near a coarse boundary, at probes·k/sqrt(k) per point."""
    coarse_k = len(coarse.centroids)
    probes = min(probes, coarse_k)
    d = torch.cdist(coarse.centroids, coarse.centroids)
    near = torch.topk(d, probes, largest=False).indices  # [coarse_k, probes], itself first
    order = torch.argsort(coarse.labels, stable=True)
    bounds = [0, *torch.cumsum(torch.bincount(coarse.labels, minlength=coarse_k), 0).tolist()]
    by_owner = [torch.nonzero(owner == c).squeeze(1) for c in range(coarse_k)]
    dist = torch.empty(len(data), dtype=data.dtype, device=data.device)
    for _ in range(passes):
        for c in range(coarse_k):
            members = order[bounds[c]:bounds[c + 1]]
            if len(members) == 0:
                continue
            # c itself first: with duplicate coarse centroids (e.g. many all-zero SH rows) topk may
            # return other indices at distance 0 and leave c out, and then possibly nothing at all
            cand = torch.cat([by_owner[c], *(by_owner[int(j)] for j in near[c] if int(j) != c)])
            idx, dd = assign(data[members], centroids[cand])
            labels[members], dist[members] = cand[idx], dd
        k = len(centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, data)
        counts = torch.bincount(labels, minlength=k).to(data.dtype)
        centroids = torch.where((counts > 0)[:, None], sums / counts.clamp_min(1)[:, None], centroids)
    return centroids, labels, float(dist.sum())


def kmeans(
    data: torch.Tensor,
    k: int,
    iterations: int = 10,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> KMeansResult:
    """Cluster rows of ``data`` [N, D] into at most ``k`` centroids, reproducibly for a given seed."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = len(data)
    k = max(1, min(k, n))
    if k <= FLAT_MAX:
        return _flat(data, k, iterations, gen)
    coarse_k = max(2, round(math.sqrt(k)))
    coarse = _flat(data, coarse_k, iterations, gen)
    counts = torch.bincount(coarse.labels, minlength=coarse_k)
    # fine centroids go where the error is: in proportion to each coarse cluster's squared error
    # (measured: 2% lower error than in proportion to its size), never more than its members
    _, coarse_dist = assign(data, coarse.centroids)
    sse_c = torch.zeros(coarse_k, dtype=torch.float64).index_add_(0, coarse.labels.cpu(), coarse_dist.cpu().double())
    alloc = _allocate((sse_c + 1e-12).tolist(), counts.tolist(), k)
    order = torch.argsort(coarse.labels, stable=True)
    bounds = torch.cumsum(counts, 0).tolist()
    centroids, owners, labels = [], [], torch.empty(n, dtype=torch.int64, device=data.device)
    base, start, sse = 0, 0, 0.0
    for c, (end, kc) in enumerate(zip(bounds, alloc, strict=True)):
        if kc == 0:
            start = end
            continue
        members = order[start:end]
        fine = _flat(data[members], kc, iterations, gen)
        centroids.append(fine.centroids)
        owners.append(torch.full((len(fine.centroids),), c, dtype=torch.int64, device=data.device))
        labels[members] = fine.labels + base
        base += len(fine.centroids)
        sse += fine.sse
        start = end
        if progress:
            progress((c + 1) / coarse_k)
    all_centroids, owner = torch.cat(centroids), torch.cat(owners)
    if REFINE_PASSES:
        all_centroids, labels, sse = _refine_across(data, coarse, all_centroids, owner, labels, REFINE_PASSES,
                                                    REFINE_PROBES)
    return KMeansResult(all_centroids, labels, sse)

"""Coarser levels of detail for the streamed SOG: each level about half the splats of the one before.

Like splat-transform's ``--decimate`` (the decimation PlayCanvas's streamed-SOG guide builds levels with), a level
is made by merging nearby pairs of Gaussians into one that keeps the pair's moments: weights are area x opacity,
the merged mean is the weighted mean, the merged covariance the weighted sum of each covariance plus its
spread about that mean (law of total variance), opacity keeps the pair's ink (area x opacity) up to 1, and
colour (all SH coefficients) is the weighted mean. Pairs are chosen cheapest first among each splat's nearest
neighbours, the cost being Ward's: how much merging the pair adds to the weighted second moment.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from spaceport.splats import GaussianScene, concat
from spaceport.stages.compress.attributes import logit, sigmoid

NEIGHBOURS = 8
"""Nearest neighbours each splat may pair with."""
ROUNDS = 4
"""Mutual-nearest-neighbour rounds per generation (each pairs splats the earlier rounds left)."""
EPS_COV = 1e-8
"""Added to the merged covariance's diagonal (splat-transform's regulariser)."""
MAX_OPACITY = 0.9999
BLOCK = 1 << 20
"""Pairs merged at once (the merge's float64 temporaries take ~0.5 KB a pair)."""
COARSEST = 262_144
"""Splats the coarsest level holds at most when the number of levels is chosen automatically."""


def auto_levels(count: int, coarsest: int = COARSEST) -> int:
    """Levels when halving until the coarsest holds at most ``coarsest`` splats (at least 2)."""
    levels = 1
    while count > coarsest:
        count = (count + 1) // 2
        levels += 1
    return max(levels, 2)


def rotations(quats: np.ndarray) -> np.ndarray:
    """(w, x, y, z) quaternions (any length) → [N, 3, 3] rotation matrices."""
    q = np.asarray(quats, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quaternions(rot: np.ndarray) -> np.ndarray:
    """[N, 3, 3] proper rotations → (w, x, y, z) unit quaternions (Shepperd's method, per row)."""
    m = rot
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = np.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], 1)
    pick = cands.argmax(1)
    q = np.empty((len(m), 4))
    for k in range(4):
        s = pick == k
        r = m[s]
        if k == 0:
            t = np.sqrt(np.maximum(1 + trace[s], 1e-30)) * 2
            q[s] = np.stack([t / 4, (r[:, 2, 1] - r[:, 1, 2]) / t, (r[:, 0, 2] - r[:, 2, 0]) / t,
                             (r[:, 1, 0] - r[:, 0, 1]) / t], 1)
            continue
        a, b, c = (k - 1), k % 3, (k + 1) % 3
        t = np.sqrt(np.maximum(1 + r[:, a, a] - r[:, b, b] - r[:, c, c], 1e-30)) * 2
        v = np.empty((len(r), 4))
        v[:, 0] = (r[:, c, b] - r[:, b, c]) / t
        v[:, 1 + a] = t / 4
        v[:, 1 + b] = (r[:, b, a] + r[:, a, b]) / t
        v[:, 1 + c] = (r[:, c, a] + r[:, a, c]) / t
        q[s] = v
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def areas(scales: np.ndarray) -> np.ndarray:
    """Surface area of the 1-sigma ellipsoids (Knud Thomsen's formula) for log scales [N, 3]."""
    p = 1.6075
    a, b, c = np.exp(np.asarray(scales, np.float64)).T ** p
    return 4 * np.pi * ((a * b + a * c + b * c) / 3) ** (1 / p)


def choose_pairs(means: np.ndarray, weights: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``wanted`` disjoint pairs (i, j) of nearby splats, cheapest (Ward's cost) first."""
    n = len(means)
    k = min(NEIGHBOURS, n - 1)
    if k < 1 or wanted < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    dist, nb = cKDTree(means).query(means, k + 1)
    dist, nb = dist[:, 1:], nb[:, 1:]  # the first neighbour is the splat itself
    wi, wj = weights[:, None], weights[nb]
    cost = dist**2 * wi * wj / np.maximum(wi + wj, 1e-30)
    free = np.ones(n, bool)
    firsts, seconds, costs = [], [], []
    rows = np.arange(n)
    for _ in range(ROUNDS):
        c = np.where(free[nb] & free[:, None], cost, np.inf)
        pick = c.argmin(1)
        best, best_cost = nb[rows, pick], c[rows, pick]
        mutual = np.isfinite(best_cost) & (best[best] == rows) & (rows < best)
        if not mutual.any():
            break
        i = rows[mutual]
        firsts.append(i)
        seconds.append(best[i])
        costs.append(best_cost[i])
        free[i] = free[best[i]] = False
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j, c = np.concatenate(firsts), np.concatenate(seconds), np.concatenate(costs)
    keep = np.argsort(c, kind="stable")[:wanted]
    return i[keep], j[keep]


def merge(scene: GaussianScene, i: np.ndarray, j: np.ndarray) -> GaussianScene:
    """One Gaussian per pair (i, j), matching the pair's moments (see the module's docstring)."""
    members = np.stack([i, j], 1)  # [P, 2]
    alpha = sigmoid(scene.opacities.astype(np.float64))[members]
    area = areas(scene.scales)[members]
    w = area * alpha + 1e-30
    weight = w / w.sum(1, keepdims=True)  # [P, 2]
    means = scene.means.astype(np.float64)[members]  # [P, 2, 3]
    mean = (weight[..., None] * means).sum(1)
    rot = rotations(scene.quats[members].reshape(-1, 4)).reshape(-1, 2, 3, 3)
    var = np.exp(2 * scene.scales.astype(np.float64))[members]  # [P, 2, 3]
    cov = np.einsum("pkij,pkj,pklj->pkil", rot, var, rot)
    delta = means - mean[:, None]
    cov = (weight[..., None, None] * (cov + delta[..., :, None] * delta[..., None, :])).sum(1)
    cov += EPS_COV * np.eye(3)
    eigval, eigvec = np.linalg.eigh(cov)
    eigvec[np.linalg.det(eigvec) < 0, :, 0] *= -1  # a proper rotation
    log_scales = 0.5 * np.log(np.maximum(eigval, 1e-30))
    new_alpha = np.clip(w.sum(1) / areas(log_scales), 1 / 255, MAX_OPACITY)

    def average(values: np.ndarray) -> np.ndarray:
        v = values.astype(np.float64)[members]
        return (weight.reshape(weight.shape + (1,) * (v.ndim - 2)) * v).sum(1).astype(np.float32)

    return GaussianScene(mean.astype(np.float32), log_scales.astype(np.float32),
                         quaternions(eigvec).astype(np.float32), logit(new_alpha).astype(np.float32),
                         average(scene.sh0), average(scene.shN), scene.model)


def decimate(scene: GaussianScene, target: int) -> GaussianScene:
    """The scene with at most ``target`` splats where pairs allow, by generations of pair merges."""
    while scene.count > target:
        weights = areas(scene.scales) * sigmoid(scene.opacities.astype(np.float64))
        i, j = choose_pairs(scene.means.astype(np.float64), weights, scene.count - target)
        if len(i) == 0:
            break
        kept = np.ones(scene.count, bool)
        kept[i] = kept[j] = False
        merged = [merge(scene, i[k:k + BLOCK], j[k:k + BLOCK]) for k in range(0, len(i), BLOCK)]
        scene = concat(scene.subset(kept), *merged)
    return scene


def lod_levels(scene: GaussianScene, levels: int) -> list[GaussianScene]:
    """``levels`` scenes: the scene itself, then each about half the one before."""
    out = [scene]
    for _ in range(levels - 1):
        out.append(decimate(out[-1], (out[-1].count + 1) // 2))
    return out

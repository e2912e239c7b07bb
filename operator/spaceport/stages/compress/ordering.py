"""Splat orderings for texture layout: Morton (Z-order) codes over the bounding box."""

from __future__ import annotations

import numpy as np

MORTON_BITS = 21
"""Bits per axis: 63-bit codes, so even dense clusters keep a spatial order without re-sorting runs."""


def _spread(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between each of the low 21 bits."""
    x = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    x = (x | (x << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    x = (x | (x << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    x = (x | (x << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    x = (x | (x << np.uint64(2))) & np.uint64(0x1249249249249249)
    return x


def morton_codes(points: np.ndarray, bits: int = MORTON_BITS) -> np.ndarray:
    p = np.asarray(points, np.float64)
    lo, hi = p.min(axis=0), p.max(axis=0)
    scale = ((1 << bits) - 1) / np.maximum(hi - lo, 1e-20)
    q = np.clip(np.floor((p - lo) * scale), 0, (1 << bits) - 1).astype(np.uint64)
    return _spread(q[:, 0]) | (_spread(q[:, 1]) << np.uint64(1)) | (_spread(q[:, 2]) << np.uint64(2))


def morton_order(points: np.ndarray) -> np.ndarray:
    """Permutation sorting points along the Z-order curve (stable)."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    return np.argsort(morton_codes(points), kind="stable")

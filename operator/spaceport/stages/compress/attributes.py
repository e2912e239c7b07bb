"""Per-attribute encodings shared by SOG v2 and SOGS v1 (means, quaternions, opacity)."""

from __future__ import annotations

import numpy as np

SQRT2 = float(np.sqrt(2.0))


def log_transform(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.log1p(np.abs(v))


def inv_log_transform(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.expm1(np.abs(v))


def encode_means(means: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float], list[float]]:
    """16-bit per axis after the log transform, ROUNDED to the nearest step: (low, high, mins, maxs)."""
    t = log_transform(means.astype(np.float64))
    mins, maxs = t.min(axis=0), t.max(axis=0)
    span = np.where(maxs - mins > 0, maxs - mins, 1.0)
    q = np.clip(np.rint((t - mins) / span * 65535.0), 0, 65535).astype(np.uint16)
    return (q & 0xFF).astype(np.uint8), (q >> 8).astype(np.uint8), mins.tolist(), maxs.tolist()


def decode_means(low: np.ndarray, high: np.ndarray, mins: list[float], maxs: list[float]) -> np.ndarray:
    q = low.astype(np.float64) + 256.0 * high.astype(np.float64)
    lo, hi = np.asarray(mins), np.asarray(maxs)
    span = np.where(hi - lo != 0, hi - lo, 1.0)
    return inv_log_transform(lo + span * q / 65535.0).astype(np.float32)


def encode_quats(quats: np.ndarray) -> np.ndarray:
    """Smallest-three: [N, 4] (w, x, y, z) → [N, 4] bytes, A = 252 + index of the largest component."""
    q = quats.astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1), np.array([1.0, 0, 0, 0]))
    k = np.argmax(np.abs(q), axis=1)
    q = q * np.where(q[np.arange(len(q)), k] < 0, -1.0, 1.0)[:, None]
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[k]  # [N, 3]
    small = np.take_along_axis(q, others, axis=1)
    out = np.empty((len(q), 4), np.uint8)
    out[:, :3] = np.clip(np.rint(255.0 * (small * SQRT2 * 0.5 + 0.5)), 0, 255).astype(np.uint8)
    out[:, 3] = (252 + k).astype(np.uint8)
    return out


def decode_quats(texels: np.ndarray) -> np.ndarray:
    k = texels[:, 3].astype(np.int64) - 252
    if np.any((k < 0) | (k > 3)):
        raise ValueError("quaternion texel with an alpha outside 252..255")
    small = (texels[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / SQRT2
    q = np.zeros((len(texels), 4))
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[k]
    np.put_along_axis(q, others, small, axis=1)
    q[np.arange(len(q)), k] = np.sqrt(np.clip(1.0 - (small * small).sum(1), 0, None))
    return q.astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))

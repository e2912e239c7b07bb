"""Comparing reconstructed camera centres with a synthetic flight's ground truth."""

from __future__ import annotations

import numpy as np

from spaceport.synthetic.flight import Flight


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale, rotation and translation minimising |s R src + t - dst|^2 (least squares, no outlier handling)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / (a**2).sum(1).mean())
    return scale, rot, mu_d - scale * rot @ mu_s


def centre_error(centres: dict[str, np.ndarray], flight: Flight) -> tuple[float, float]:
    """(similarity scale, largest centre error after the similarity / the flight's extent) over the
    images present in ``centres`` (name -> camera centre)."""
    truth = dict(zip(flight.image_names, flight.camera_centers, strict=True))
    names = [n for n in flight.image_names if n in centres]
    if len(names) < 3:
        return float("nan"), float("inf")
    src = np.array([centres[n] for n in names])
    dst = np.array([truth[n] for n in names])
    s, r, t = umeyama(src, dst)
    err = np.linalg.norm(src @ (s * r).T + t - dst, axis=1)
    return s, float(err.max() / flight.extent)

"""A bound on how needle-like a Gaussian may become.

A Gaussian that fits a few training photos as a long thin stroke (a fence, a shadow's edge, a furrow seen at
one angle) draws a dark or bright streak across every other view. Flat Gaussians are what surfaces need
(a disc: two long axes, one short), so the bound is on the longest axis against the middle one, not
against the shortest: after every step, the longest axis is cut to ``max_elongation`` times the middle one.
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def limit_elongation(log_scales: torch.Tensor, max_elongation: float) -> int:
    """Cut each row's largest log scale to its middle one plus ``log(max_elongation)``, in place; returns how
    many rows were cut."""
    ordered, axes = log_scales.sort(dim=1)
    bound = ordered[:, 1] + math.log(max_elongation)
    over = ordered[:, 2] > bound
    count = int(over.sum())
    if count:
        rows = over.nonzero()[:, 0]
        log_scales[rows, axes[rows, 2]] = bound[rows]
    return count

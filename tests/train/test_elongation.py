"""The elongation bound (train.maxElongation) shortens needles and leaves discs and round Gaussians alone."""

from __future__ import annotations

import math

import torch

from spaceport.stages.train.elongation import limit_elongation


def test_needles_are_cut_to_the_bound_and_discs_are_left_alone() -> None:
    scales = torch.log(torch.tensor([
        [0.01, 1.0, 1.0],  # a disc, as a surface needs: two long axes
        [10.0, 1.0, 0.5],  # a needle along x: 10x its middle axis
        [0.2, 0.1, 3.0],   # a needle along z
        [1.0, 1.0, 1.0],   # round
        [0.5, 1.4, 0.5],   # 2.8x: within a bound of 3
    ]))
    before = scales.clone()
    assert limit_elongation(scales, 3.0) == 2
    assert torch.equal(scales[[0, 3, 4]], before[[0, 3, 4]])
    assert math.isclose(float(scales[1, 0].exp()), 3.0, rel_tol=1e-6)  # 3x the middle axis (1.0), on the same axis
    assert math.isclose(float(scales[2, 2].exp()), 0.6, rel_tol=1e-6)  # 3x the middle axis (0.2)
    assert torch.equal(scales[1, 1:], before[1, 1:]) and torch.equal(scales[2, :2], before[2, :2])
    assert limit_elongation(scales, 3.0) == 0  # a fixed point

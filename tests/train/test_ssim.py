"""The compiled CPU SSIM against its torch definition: values and gradients in float64."""

from __future__ import annotations

import pytest
import torch

from spaceport.stages.train.metrics import ssim, ssim_torch


@pytest.mark.parametrize("shape", [(40, 57), (11, 11), (64, 48)])
def test_matches_torch_definition_in_float64(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    a = torch.rand(*shape, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    b = (a.detach() + 0.2 * torch.randn(*shape, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    weight = 0.7  # an upstream gradient other than 1
    (weight * ssim(a, b)).backward()
    ours, ours_grad = ssim(a.detach(), b), a.grad.clone()
    a.grad = None
    (weight * ssim_torch(a, b)).backward()
    ref, ref_grad = ssim_torch(a.detach(), b), a.grad
    assert 0.2 < float(ref) < 0.99
    assert abs(float(ours) - float(ref)) < 1e-12
    assert float((ours_grad - ref_grad).abs().max()) < 1e-10 * float(ref_grad.abs().max())


def test_identical_images_score_one_and_float32_agrees() -> None:
    a = torch.rand(30, 40, 3, generator=torch.Generator().manual_seed(5))
    assert abs(float(ssim(a, a)) - 1.0) < 1e-5
    b = torch.rand(30, 40, 3, generator=torch.Generator().manual_seed(6))
    assert abs(float(ssim(a, b)) - float(ssim_torch(a.double(), b.double()))) < 1e-5

"""The compiled compositor against the pure-torch reference: values and gradients in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spaceport.stages.train.rasterize import EPS2D, project, rasterize_cpu, sh_colors
from spaceport.stages.train.reference import composite_reference


def random_scene(n: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([2.0, 1.6, 1.0], dtype=dtype)
    means = means + torch.tensor([0.0, 0.0, 3.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.15 + 0.01
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.95 + 0.04
    sh = torch.randn(n, 16, 3, generator=g, dtype=dtype) * 0.3
    return [t.requires_grad_(True) for t in (means, quats, scales, opacities, sh)]


def camera(dtype: torch.dtype, width: int = 50, height: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    angle = 0.2
    view = torch.eye(4, dtype=dtype)
    view[:3, :3] = torch.tensor([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    view[:3, 3] = torch.tensor([0.1, -0.05, 0.3])
    K = torch.tensor([[40.0, 0, width / 2 + 1.3], [0, 42.0, height / 2 - 0.7], [0, 0, 1]], dtype=dtype)
    return view, K


def compensation_reference(conics: torch.Tensor) -> torch.Tensor:
    """The antialiased mode's opacity factor by its definition, ``sqrt(det(cov2d) / det(cov2d + 0.3 I))``,
    with ``cov2d + 0.3 I`` the inverse of the conic matrix (inverted and subtracted explicitly)."""
    a, b, c = conics.unbind(-1)
    blurred = torch.linalg.inv(torch.stack([a, b, b, c], -1).reshape(-1, 2, 2))
    original = blurred - EPS2D * torch.eye(2, dtype=conics.dtype)
    return torch.sqrt(torch.clamp(torch.linalg.det(original) / torch.linalg.det(blurred), min=0.0))


def render_both(params: list[torch.Tensor], dtype: torch.dtype, degree: int, width: int = 50, height: int = 40,
                antialiased: bool = False):
    view, K = camera(dtype, width, height)
    # drawn in float64 then cast, so both precisions see the same loss
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(height, width, 3, dtype=torch.float64, generator=g).to(dtype)
    alpha_weights = torch.randn(height, width, dtype=torch.float64, generator=g).to(dtype)
    means, quats, scales, opacities, sh = params
    image, alpha, _ = rasterize_cpu(means, quats, scales, opacities, sh, view, K, width, height, degree,
                                    antialiased=antialiased)
    ((image * weights).sum() + (alpha * alpha_weights).sum()).backward()
    ours = [image.detach(), alpha.detach()] + [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    m2, conics, depths, radii = project(means, quats, scales, view, K, width, height, opacities, antialiased)
    campos = -view[:3, :3].T @ view[:3, 3]
    colors = sh_colors(means, sh, degree, campos)
    live = (radii > 0).all(-1)  # culled Gaussians' conics are not inverses of anything
    factor = torch.ones_like(opacities).masked_scatter(live, compensation_reference(conics[live]))
    ref_opacities = opacities * factor if antialiased else opacities
    ref_image, ref_alpha = composite_reference(m2, conics, colors, ref_opacities, radii, depths, width, height)
    ((ref_image * weights).sum() + (ref_alpha * alpha_weights).sum()).backward()
    ref = [ref_image.detach(), ref_alpha.detach()] + [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return ours, ref


@pytest.mark.parametrize(("degree", "antialiased"), [(0, False), (3, False), (3, True)])
def test_values_and_gradients_match_float64_reference(degree: int, antialiased: bool) -> None:
    params = random_scene(300, torch.float64)
    ours, ref = render_both(params, torch.float64, degree, antialiased=antialiased)
    names = ["image", "alpha", "means", "quats", "scales", "opacities", "sh"]
    assert float(ours[0].max()) > 0.1, "the scene must actually cover the image"
    for name, a, b in zip(names, ours, ref, strict=True):
        scale = float(b.abs().max())
        assert scale > 0 or (name == "sh" and degree == 0), name
        assert float((a - b).abs().max()) <= 1e-9 * max(1.0, scale), name


def test_float32_agrees_with_float64() -> None:
    p64 = random_scene(300, torch.float64)
    p32 = [p.detach().float().requires_grad_(True) for p in p64]
    ours32, _ = render_both(p32, torch.float32, 3)
    ours64, _ = render_both(p64, torch.float64, 3)
    assert float((ours32[0].double() - ours64[0]).abs().max()) < 1e-4
    for a, b in zip(ours32[2:], ours64[2:], strict=True):
        assert float((a.double() - b).abs().max()) <= 2e-3 * float(b.abs().max())


def test_backward_is_bit_identical_between_runs() -> None:
    params = random_scene(500, torch.float32, seed=3)
    first, _ = render_both(params, torch.float32, 3, 64, 48)
    second, _ = render_both(params, torch.float32, 3, 64, 48)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_degenerate_gaussians_are_culled_not_fatal() -> None:
    """A zero quaternion (drawn with the identity rotation, as F.normalize gives gsplat) and centres on
    the camera plane or at the camera itself must not raise out of the parallel kernels: a division by
    zero there used to end a training run with an opaque SystemError."""
    dtype = torch.float32
    means, quats, scales, opacities, sh = (p.detach() for p in random_scene(40, dtype))
    view, K = camera(dtype)
    campos = -view[:3, :3].T @ view[:3, 3]
    means[0] = campos  # at the camera centre
    means[1] = torch.linalg.solve(view[:3, :3], torch.tensor([0.5, 0.2, 0.0]) - view[:3, 3])  # camera-space z = 0
    quats[2] = 0.0
    params = [p.clone().requires_grad_(True) for p in (means, quats, scales, opacities, sh)]
    image, alpha, info = rasterize_cpu(*params, view, K, 50, 40, 3)
    (image.sum() + alpha.sum()).backward()
    radii = info["radii"][0]
    assert (radii[:2] == 0).all()  # both culled
    assert (radii[2] > 0).all()  # drawn, unrotated
    assert torch.isfinite(image).all() and torch.isfinite(alpha).all()
    for p in params:
        assert torch.isfinite(p.grad).all()
    identity = quats.clone()
    identity[2] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    same, _, _ = rasterize_cpu(means, identity, scales, opacities, sh, view, K, 50, 40, 3)
    assert torch.equal(image.detach(), same)


def test_gaussians_culled_from_their_mean_alone_are_exactly_the_off_screen_ones() -> None:
    """The projection skips, from the mean and largest scale alone, Gaussians that cannot reach the image;
    radii must still equal the full projection's everywhere, including for large Gaussians whose centre
    is off screen but whose footprint reaches in."""
    dtype = torch.float64
    g = torch.Generator().manual_seed(5)
    n = 3000
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([8.0, 6.0, 5.0], dtype=dtype)
    means = means + torch.tensor([0.0, 0.0, 2.0], dtype=dtype)  # some behind the camera, most beside the view
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.rand(n, 3, generator=g, dtype=dtype) * 7.0 - 7.0)  # 0.001 to 1
    opacities = torch.full((n,), 0.5, dtype=dtype)
    sh = torch.randn(n, 16, 3, generator=g, dtype=dtype) * 0.3
    view, K = camera(dtype)
    image, _, info = rasterize_cpu(means, quats, scales, opacities, sh, view, K, 50, 40, 3)
    m2, _, _, radii = project(means, quats, scales, view, K, 50, 40, opacities)
    ours = info["radii"][0]
    assert torch.equal(ours, radii)
    culled = (radii == 0).any(-1)
    assert 0.5 * n < int(culled.sum()) < n  # most culled, not all
    off_centre = (m2[:, 0] < 0) | (m2[:, 0] >= 50) | (m2[:, 1] < 0) | (m2[:, 1] >= 40)
    assert int((off_centre & ~culled).sum()) > 20  # centres off screen that still reach the image
    drawn = ~culled
    assert torch.allclose(info["means2d"][0][drawn].detach(), m2[drawn].detach(), rtol=0, atol=1e-9)
    assert float(image.max()) > 0.1


def test_antialiased_mode_dims_small_gaussians_and_barely_touches_large_ones() -> None:
    """The compensation is what Mip-Splatting's filter does to a splat: a Gaussian much smaller than a
    pixel keeps its 0.3 px² footprint but loses most of its opacity; one many pixels wide is unchanged."""
    dtype = torch.float64
    view, K = camera(dtype)  # f = 40 px at depth ~3: 1 px is ~0.075 world units
    for scale, low, high in ((0.01, 0.0, 0.1), (0.5, 0.99, 1.0)):
        means = torch.tensor([[0.0, 0.0, 3.0]], dtype=dtype)
        quats = torch.tensor([[1.0, 0, 0, 0]], dtype=dtype)
        scales = torch.full((1, 3), scale, dtype=dtype)
        opacities = torch.tensor([0.9], dtype=dtype)
        sh = torch.zeros(1, 1, 3, dtype=dtype)
        _, classic, _ = rasterize_cpu(means, quats, scales, opacities, sh, view, K, 50, 40, 0)
        _, aa, _ = rasterize_cpu(means, quats, scales, opacities, sh, view, K, 50, 40, 0, antialiased=True)
        _, conics, _, _ = project(means, quats, scales, view, K, 50, 40)
        factor = float(compensation_reference(conics)[0])
        assert low <= factor <= high, (scale, factor)
        kept = aa > 0  # (alphas under 1/255 are skipped in either mode)
        assert bool(kept.any())
        assert torch.allclose(aa[kept], classic[kept] * factor, rtol=1e-9, atol=0)

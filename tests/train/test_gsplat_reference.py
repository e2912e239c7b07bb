"""The CPU projection against gsplat 1.5.3's own pure-torch implementation, on the CPU, in float64.

``rasterization(..., packed=False)`` projects with ``fully_fused_projection(..., opacities=opacities)``,
whose CUDA kernel (``ProjectionEWA3DGSFused.cu``) sizes each box by the opacity. gsplat's torch reference
(``gsplat.cuda._torch_impl._fully_fused_projection``) computes everything else the kernel does — means2d,
depths, conics, the antialiased compensation — but keeps the older 3.33-sigma radii and takes no
opacities. So: means2d, depths, conics, compensations and colours are compared with gsplat's torch
functions directly, and the radii with gsplat's 2D covariances put through the kernel's rule, quoted in
:func:`gsplat_cuda_radii`. DefaultStrategy counts a Gaussian as visible by ``radii > 0``: this is what makes
CPU and CUDA densify alike.
"""

from __future__ import annotations

import pytest
import torch

from spaceport.stages.train.rasterize import project, rasterize_cpu, sh_colors
from spaceport.stages.train.reference import composite_reference
from tests.train.test_rasterizer import camera, random_scene

gsplat_torch = pytest.importorskip("gsplat.cuda._torch_impl")

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat/cuda/include/Common.h


def gsplat_projection(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, view: torch.Tensor,
                      K: torch.Tensor, width: int, height: int, antialiased: bool) -> dict[str, torch.Tensor]:
    """gsplat's pure-torch projection of one camera, as ``_rasterization`` (its torch rasterizer) calls it."""
    covars, _ = gsplat_torch._quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    radii, means2d, depths, conics, compensations = gsplat_torch._fully_fused_projection(
        means, covars, view[None], K[None], width, height, calc_compensations=antialiased)
    means_c, covars_c = gsplat_torch._world_to_cam(means, covars, view[None])
    _, covars2d = gsplat_torch._persp_proj(means_c, covars_c, K[None], width, height)
    return {"radii333": radii[0], "means2d": means2d[0], "depths": depths[0], "conics": conics[0],
            "compensations": None if compensations is None else compensations[0],
            "covars2d": covars2d[0] + 0.3 * torch.eye(2, dtype=means.dtype)}


def gsplat_cuda_radii(ref: dict[str, torch.Tensor], opacities: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The radii rule of gsplat 1.5.3's ``projection_ewa_3dgs_fused_fwd_kernel``, line for line:

        float extend = 3.33f;
        if (opacities != nullptr) {
            float opacity = opacities[bid * N + gid];
            if (compensations != nullptr) opacity *= compensation;
            if (opacity < ALPHA_THRESHOLD) { radii = 0; return; }
            extend = min(extend, sqrt(2.0f * __logf(opacity / ALPHA_THRESHOLD)));
        }
        float radius_x = ceilf(extend * sqrtf(covar2d[0][0]));
        float radius_y = ceilf(extend * sqrtf(covar2d[1][1]));
        if (radius_x <= radius_clip && radius_y <= radius_clip) { radii = 0; return; }   // radius_clip = 0
        if (mean2d.x + radius_x <= 0 || mean2d.x - radius_x >= image_width || ...) { radii = 0; return; }

    applied to gsplat's torch-computed 2D covariance (with the 0.3 px² blur) and the Gaussians its torch
    reference keeps (in front of the near plane, positive determinant: its 3.33-sigma radii nonzero
    somewhere on or off screen is not the test, so validity is recomputed here)."""
    opacity = opacities.clone()
    if ref["compensations"] is not None:
        opacity = opacity * ref["compensations"]
    cov = ref["covars2d"]
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] * cov[:, 1, 0]
    valid = (det > 0) & (ref["depths"] > 0.01) & (ref["depths"] < 1e10) & (opacity >= ALPHA_THRESHOLD)
    extend = torch.clamp(torch.sqrt(2.0 * torch.log(torch.clamp(opacity / ALPHA_THRESHOLD, min=1.0))), max=3.33)
    rx, ry = torch.ceil(extend * cov[:, 0, 0].sqrt()), torch.ceil(extend * cov[:, 1, 1].sqrt())
    m = ref["means2d"]
    valid &= ~((rx <= 0) & (ry <= 0))
    valid &= ~((m[:, 0] + rx <= 0) | (m[:, 0] - rx >= width) | (m[:, 1] + ry <= 0) | (m[:, 1] - ry >= height))
    radii = torch.stack([rx, ry], -1)
    return torch.where(valid[:, None], radii, torch.zeros_like(radii)).int()


def faint_scene(n: int, seed: int) -> list[torch.Tensor]:
    """:func:`random_scene` with opacities from 1e-4 to 1 (log-uniform): many under 1/255, many between."""
    means, quats, scales, _, sh = (p.detach() for p in random_scene(n, torch.float64, seed=seed))
    g = torch.Generator().manual_seed(seed + 100)
    opacities = torch.exp(torch.rand(n, generator=g, dtype=torch.float64) * torch.log(torch.tensor(1e-4)))
    return [means, quats, scales, opacities, sh]


@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_and_radii_match_gsplat(antialiased: bool) -> None:
    means, quats, scales, opacities, sh = faint_scene(2000, seed=11)
    scales = scales * 0.3  # small enough that the antialiased compensation varies widely
    view, K = camera(torch.float64)
    _, _, info = rasterize_cpu(means, quats, scales, opacities, sh, view, K, 50, 40, 3, antialiased=antialiased)
    ours = info["radii"][0]
    ref = gsplat_projection(means, quats, scales, view, K, 50, 40, antialiased)
    want = gsplat_cuda_radii(ref, opacities, 50, 40)
    assert torch.equal(ours, want)
    # the rule matters here: Gaussians the 3.33-sigma radii would count visible, and boxes that shrank
    faint = (ref["radii333"] > 0).all(-1) & (want == 0).all(-1)
    assert int(faint.sum()) > 100
    shrunk = (want > 0).all(-1) & (want < ref["radii333"]).any(-1)
    assert int(shrunk.sum()) > 100
    # the torch projection (the pure-torch path the tests and benchmarks use) gives the same radii
    _, conics, _, radii = project(means, quats, scales, view, K, 50, 40, opacities, antialiased)
    assert torch.equal(radii, want)
    live = (want > 0).all(-1)
    assert torch.allclose(info["means2d"][0][live], ref["means2d"][live], rtol=0, atol=1e-9)
    assert torch.allclose(info["depths"][0][live], ref["depths"][live], rtol=1e-12, atol=0)
    assert torch.allclose(conics[live], ref["conics"][live], rtol=1e-9, atol=1e-12)


def test_colours_and_image_match_gsplat_projection() -> None:
    """gsplat's SH colours, and the image: ours (opacity-aware radii) against the reference compositor fed
    gsplat's torch projection with its 3.33-sigma radii. The boxes differ; the pixels must not, because the
    smaller box is exactly where ``alpha >= 1/255`` can hold."""
    means, quats, scales, opacities, sh = faint_scene(800, seed=12)
    opacities = opacities ** 0.75  # from 0.001: a fifth under 1/255
    view, K = camera(torch.float64)
    image, alpha, info = rasterize_cpu(means, quats, scales, opacities, sh, view, K, 50, 40, 3)
    ref = gsplat_projection(means, quats, scales, view, K, 50, 40, False)
    campos = -view[:3, :3].T @ view[:3, 3]
    gs_colors = torch.clamp_min(gsplat_torch._spherical_harmonics(3, means - campos, sh) + 0.5, 0.0)
    live = (ref["radii333"] > 0).all(-1)
    assert torch.allclose(sh_colors(means, sh, 3, campos)[live], gs_colors[live], rtol=0, atol=1e-12)
    ref_image, ref_alpha = composite_reference(ref["means2d"], ref["conics"], gs_colors, opacities,
                                               ref["radii333"], ref["depths"], 50, 40)
    assert float(ref_image.max()) > 0.1
    assert torch.allclose(image, ref_image, rtol=0, atol=1e-9)
    assert torch.allclose(alpha, ref_alpha, rtol=0, atol=1e-9)
    assert int(((info["radii"][0] == 0).all(-1) & live).sum()) > 50  # culled by opacity, drawn by neither

"""3DGS image formation with one interface and two back ends.

``rasterize(...)`` takes activated parameters (as ``gsplat.rasterization`` does: scales, not log scales;
opacities in 0..1; SH coefficients ``[N, K, 3]``) and one camera, and returns the image, the alpha and an
``info`` dict shaped like gsplat's (``means2d`` ``[1, N, 2]`` with gradients, ``radii`` ``[1, N, 2]``,
``width``, ``height``, ``n_cameras``), so gsplat's densification strategies work with either back end.

On CUDA tensors it calls ``gsplat.rasterization``. On CPU, projection and SH colour run in torch
(cheap, per Gaussian, autograd for free) and the per-pixel compositing, the expensive part, runs in the
compiled kernels of :mod:`rasterizer_cpu`. Conventions match gsplat's: its classic mode, and with
``antialiased=True`` its antialiased mode (Mip-Splatting's 2D filter: each Gaussian's opacity times
``sqrt(det(cov2d) / det(cov2d + 0.3 I))``, so that the 0.3 px² dilation every splat gets does not make
small ones brighter and fatter than they are; :func:`aa_compensation`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spaceport.stages.train import project_cpu, tile_binning
from spaceport.stages.train import rasterizer_cpu as kernels

EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
SH_C0 = 0.28209479177387814


def quat_to_rotmat(quats: Tensor) -> Tensor:
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def project(
    means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
    opacities: Tensor | None = None, antialiased: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Perspective projection as in gsplat: returns means2d [N,2], conics [N,3], depths [N], radii [N,2].

    With ``opacities``, radii follow gsplat's CUDA projection (what ``rasterization`` returns): a box of
    ``min(3.33, sqrt(2 log(255 opacity)))`` standard deviations, 0 where the opacity (times the antialiased
    mode's compensation) is under 1/255. Without, the 3.33-sigma box of gsplat's torch reference.
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t
    M = R @ (quat_to_rotmat(quats) * scales[:, None, :])  # camera-space R_c R_g S
    cov = M @ M.transpose(1, 2)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = mc.unbind(-1)
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    # gsplat clamps the Jacobian's x/z, y/z a little beyond the frustum so edge Gaussians stay sane
    tx = z * torch.clamp(x / z, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    ty = z * torch.clamp(y / z, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)
    cov2 = J @ cov @ J.transpose(1, 2)
    a = cov2[:, 0, 0] + EPS2D
    b = 0.5 * (cov2[:, 0, 1] + cov2[:, 1, 0])
    c = cov2[:, 1, 1] + EPS2D
    det = (a * c - b * b).clamp(min=1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    with torch.no_grad():
        extent = torch.full_like(a, project_cpu.MAX_EXTENT)
        if opacities is not None:
            effective = opacities.detach()
            if antialiased:
                effective = effective * torch.sqrt(torch.clamp(((a - EPS2D) * (c - EPS2D) - b * b) / det, min=0.0))
            extent = opacity_extent(effective)
        radii = torch.stack([torch.ceil(extent * a.sqrt()), torch.ceil(extent * c.sqrt())], -1)
        valid = (det > 0) & (z > NEAR_PLANE) & (z < FAR_PLANE) & (extent > 0)
        inside = ((means2d[:, 0] + radii[:, 0] > 0) & (means2d[:, 0] - radii[:, 0] < width)
                  & (means2d[:, 1] + radii[:, 1] > 0) & (means2d[:, 1] - radii[:, 1] < height))
        radii = torch.where((valid & inside)[:, None], radii, torch.zeros_like(radii))
        radii = torch.nan_to_num(radii, nan=0.0).int()
    return means2d, conics, z, radii


def opacity_extent(opacities: Tensor) -> Tensor:
    """:func:`project_cpu.opacity_extent` elementwise: ``min(3.33, sqrt(2 log(255 o)))``, 0 under 1/255."""
    ratio = opacities / project_cpu.ALPHA_MIN
    extent = torch.sqrt(2.0 * torch.log(ratio.clamp(min=1.0))).clamp(max=project_cpu.MAX_EXTENT)
    return torch.where(opacities >= project_cpu.ALPHA_MIN, extent, torch.zeros_like(extent))


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis up to ``degree`` (gsplat's ordering and signs) at unit directions: [N, (d+1)^2]."""
    out = [torch.full_like(dirs[:, 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2, fc1, fs1 = z * z, x * x - y * y, 2 * x * y
        out += [0.5462742152960395 * fs1, -1.092548430592079 * z * y, 0.9461746957575601 * z2 - 0.3153915652525201,
                -1.092548430592079 * z * x, 0.5462742152960395 * fc1]
    if degree >= 3:
        fc2, fs2 = x * fc1 - y * fs1, x * fs1 + y * fc1
        tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
        out += [-0.5900435899266435 * fs2, 1.445305721320277 * z * fs1, tmp_c * y,
                z * (1.865881662950577 * z2 - 1.119528997770346), tmp_c * x, 1.445305721320277 * z * fc1,
                -0.5900435899266435 * fc2]
    return torch.stack(out, -1)


def sh_colors(means: Tensor, sh: Tensor, degree: int, campos: Tensor) -> Tensor:
    """View-dependent RGB as gsplat computes it: SH sum + 0.5, clamped at 0."""
    n_bases = (degree + 1) ** 2
    dirs = F.normalize(means - campos, dim=-1)
    rgb = (sh_bases(degree, dirs)[:, :, None] * sh[:, :n_bases]).sum(1)
    return torch.clamp_min(rgb + 0.5, 0.0)


def aa_compensation(conics: Tensor) -> Tensor:
    """The antialiased mode's opacity factor ``sqrt(det(cov2d) / det(cov2d + 0.3 I))`` per Gaussian, from
    the conics ``(A, B, C)``, the inverse of the dilated covariance ``cov2d + 0.3 I = [[a, b], [b, c]]``.

    With ``D = ac - b^2 = 1 / (AC - B^2)``, ``a = C D``, ``c = A D`` and
    ``det(cov2d) = (a - 0.3)(c - 0.3) - b^2 = D - 0.3 (a + c) + 0.09``, so the ratio is
    ``1 - 0.3 (A + C) + 0.09 (AC - B^2)``: no division, and differentiable through the conics (whose
    gradients the projection kernels already pass back). Culled Gaussians (zero conics) get 1.
    """
    a, b, c = conics.unbind(-1)
    ratio = 1.0 - EPS2D * (a + c) + EPS2D * EPS2D * (a * c - b * b)
    # gsplat clamps the ratio at 0; the floor here keeps sqrt's gradient finite (it adds 1e-6 to the root)
    return torch.sqrt(ratio.clamp(min=1e-12))


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class Composite(torch.autograd.Function):
    """Tile-sorted alpha compositing on the CPU kernels."""

    @staticmethod
    def forward(ctx: Any, means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor,  # type: ignore[override]
                bins: tile_binning.TileBins, width: int, height: int) -> tuple[Tensor, Tensor]:
        dtype = means2d.dtype
        image = torch.empty(height, width, 3, dtype=dtype)
        alpha = torch.empty(height, width, dtype=dtype)
        last = np.empty((height, width), np.int64)
        offsets, flat_ids = bins.offsets, bins.flat_ids
        packed = (kernels.pack_intersections(_np(means2d), _np(conics), _np(colors), _np(opacities), flat_ids),
                  bins.spans)
        kernels.composite_forward(*packed, offsets, width, height, image.numpy(), alpha.numpy(), last)
        ctx.packed, ctx.offsets, ctx.flat_ids, ctx.size, ctx.last = packed, offsets, flat_ids, (width, height), last
        ctx.n = len(means2d)
        ctx.save_for_backward(alpha)
        return image, alpha

    @staticmethod
    def backward(ctx: Any, v_image: Tensor, v_alpha: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (alpha,) = ctx.saved_tensors
        width, height = ctx.size
        dtype = ctx.packed[0].dtype
        v_image = torch.zeros(height, width, 3, dtype=alpha.dtype) if v_image is None else v_image
        v_alpha = torch.zeros(height, width, dtype=alpha.dtype) if v_alpha is None else v_alpha
        rows = np.empty((len(ctx.flat_ids), kernels.GRAD_COLS), dtype)  # the kernels write or zero every row
        kernels.composite_backward(*ctx.packed, ctx.offsets, width, height, _np(alpha), ctx.last,
                                   _np(v_image.to(alpha.dtype)), _np(v_alpha.to(alpha.dtype)), rows)
        grads = [np.empty((ctx.n, 2), dtype), np.empty((ctx.n, 3), dtype), np.empty((ctx.n, 3), dtype),
                 np.empty(ctx.n, dtype)]
        kernels.reduce_rows(ctx.flat_ids, rows, *grads)
        return (*(torch.from_numpy(g) for g in grads), None, None, None)


class ProjectSH(torch.autograd.Function):
    """Projection and SH colour on the compiled CPU kernels (same maths as :func:`project` + :func:`sh_colors`)."""

    @staticmethod
    def forward(ctx: Any, means: Tensor, quats: Tensor, scales: Tensor, sh: Tensor,  # type: ignore[override]
                viewmat: Tensor, K: Tensor, width: int, height: int, degree: int, opacities: Tensor,
                antialiased: bool) -> tuple[Tensor, ...]:
        n, dtype = len(means), means.dtype
        means2d, conics = torch.empty(n, 2, dtype=dtype), torch.empty(n, 3, dtype=dtype)
        colors, depths = torch.empty(n, 3, dtype=dtype), torch.empty(n, dtype=dtype)
        radii = torch.empty(n, 2, dtype=torch.int32)
        arrays = [_np(means), _np(quats), _np(scales), _np(sh), degree, _np(viewmat), _np(K), width, height]
        project_cpu.project_forward(*arrays, _np(opacities), antialiased, means2d.numpy(), conics.numpy(),
                                    colors.numpy(), depths.numpy(), radii.numpy())
        ctx.arrays, ctx.radii = arrays, radii.numpy()
        ctx.mark_non_differentiable(depths, radii)
        return means2d, conics, colors, depths, radii

    @staticmethod
    def backward(ctx: Any, v_means2d: Tensor, v_conics: Tensor, v_colors: Tensor, *_: Any) -> tuple[Any, ...]:  # type: ignore[override]
        means, quats, scales, sh = ctx.arrays[:4]
        grads = [np.empty_like(a) for a in (means, quats, scales, sh)]  # the kernel writes every row

        def upstream(v: Tensor | None, cols: int) -> np.ndarray:
            if v is None:
                return np.zeros((len(means), cols), means.dtype)
            return np.ascontiguousarray(v.detach().numpy(), means.dtype)  # a copy only where needed

        project_cpu.project_backward(*ctx.arrays, ctx.radii, upstream(v_means2d, 2), upstream(v_conics, 3),
                                     upstream(v_colors, 3), *grads)
        # radii are not differentiable: the opacities that shaped them get their gradient from the compositor
        return (*(torch.from_numpy(g) for g in grads), None, None, None, None, None, None, None)


def rasterize_cpu(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor, viewmat: Tensor, K: Tensor,
    width: int, height: int, sh_degree: int, *, antialiased: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    means2d, conics, colors, depths, radii = ProjectSH.apply(means, quats, scales, sh, viewmat.to(means.dtype),
                                                             K.to(means.dtype), width, height, sh_degree,
                                                             opacities.detach(), antialiased)
    if antialiased:
        opacities = opacities * aa_compensation(conics)
    means2d_b = means2d[None]  # the tensor strategies read .grad from
    radii_np = radii.numpy()
    bins = tile_binning.bin_tiles(_np(means2d), _np(conics), _np(opacities), radii_np, _np(depths), width, height)
    image, alpha = Composite.apply(means2d_b[0], conics, colors, opacities, bins, width, height)
    info = {"means2d": means2d_b, "radii": radii[None], "depths": depths[None], "width": width, "height": height,
            "n_cameras": 1, "gaussian_ids": None, "isect_count": len(bins.flat_ids)}
    return image, alpha, info


def rasterize(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, sh: Tensor, viewmat: Tensor, K: Tensor,
    width: int, height: int, sh_degree: int, *, absgrad: bool = False, antialiased: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render one view: ``image [H, W, 3]``, ``alpha [H, W]``, ``info``. The device of ``means`` picks
    the back end; ``antialiased`` picks gsplat's antialiased mode (and the same maths on CPU)."""
    if means.device.type == "cuda":
        from gsplat import rasterization

        image, alpha, info = rasterization(
            means, quats, scales, opacities, sh, viewmat[None], K[None], width, height,
            sh_degree=sh_degree, packed=False, absgrad=absgrad,
            rasterize_mode="antialiased" if antialiased else "classic",
        )
        return image[0], alpha[0, ..., 0], info
    return rasterize_cpu(means, quats, scales, opacities, sh, viewmat, K, width, height, sh_degree,
                         antialiased=antialiased)


def scene_extent(camera_centres: np.ndarray) -> float:
    """Radius of the camera cloud (as 3DGS uses for learning rates and densification thresholds)."""
    centre = camera_centres.mean(0)
    return float(max(1e-3, 1.1 * np.linalg.norm(camera_centres - centre, axis=1).max(initial=0.0))) or math.inf

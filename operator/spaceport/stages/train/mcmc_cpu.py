"""gsplat's MCMC strategy on CPU tensors: torch versions of the two CUDA-only operations it calls.

gsplat 1.5.3's ``MCMCStrategy`` is plain torch except for ``compute_relocation`` (the opacity and scale
of a Gaussian split into n copies, eq. 9 of Kheradmand et al., "3D Gaussian Splatting as Markov Chain
Monte Carlo") and ``quat_scale_to_covar_preci`` (covariances for the position noise), both CUDA
kernels. :class:`DeviceMCMCStrategy` runs gsplat's own strategy code and, for tensors on the CPU only,
has ``gsplat.strategy.ops`` call the functions here for the duration of one call; on CUDA nothing changes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from gsplat.strategy import MCMCStrategy
from torch import Tensor

from spaceport.stages.train.rasterize import quat_to_rotmat


@cache
def _split_coefficients(n_max: int) -> Tensor:
    """``[n_max + 1, n_max]`` float64: row n holds C(n, k+1) (-1)^k / sqrt(k+1) for k < n, 0 after.

    Eq. 9 sums C(i-1, k) over i = k+1..n, which is C(n, k+1) (the hockey-stick identity), so the
    double sum of the paper becomes one dot product per Gaussian.
    """
    table = torch.zeros(n_max + 1, n_max, dtype=torch.float64)
    for n in range(1, n_max + 1):
        for k in range(n):
            table[n, k] = math.comb(n, k + 1) * (-1) ** k / math.sqrt(k + 1)
    return table


def relocation(opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
    """Opacities ``[N]`` and scales ``[N, 3]`` of a Gaussian shared by ``ratios[i]`` copies (clamped to
    1..n_max as gsplat does), such that the copies together render like the original."""
    n_max = binoms.shape[0]
    n = ratios.clamp(1, n_max).long()
    o = opacities.double()
    new_o = 1.0 - (1.0 - o) ** (1.0 / n.double())
    powers = new_o[:, None] ** torch.arange(1, n_max + 1, dtype=torch.float64)  # new_o^(k+1)
    denom = (_split_coefficients(n_max)[n] * powers).sum(1)
    new_scales = (o / denom)[:, None] * scales.double()
    return new_o.to(opacities.dtype), new_scales.to(scales.dtype)


def covariances(quats: Tensor, scales: Tensor, compute_covar: bool = True, compute_preci: bool = True,
                triu: bool = False) -> tuple[Tensor | None, Tensor | None]:
    """``R diag(s)^2 R^T`` (and its inverse) from unnormalised quaternions, full 3x3 matrices."""
    if triu:
        raise NotImplementedError("triangular covariances are not used by the MCMC strategy")
    R = quat_to_rotmat(quats)
    covar = (R * scales[:, None, :] ** 2) @ R.transpose(-1, -2) if compute_covar else None
    preci = (R / scales[:, None, :] ** 2) @ R.transpose(-1, -2) if compute_preci else None
    return covar, preci


@contextlib.contextmanager
def _torch_ops_for_cpu(on_cpu: bool) -> Iterator[None]:
    import gsplat.strategy.ops as ops

    if not on_cpu:
        yield
        return
    saved = ops.compute_relocation, ops.quat_scale_to_covar_preci
    ops.compute_relocation, ops.quat_scale_to_covar_preci = relocation, covariances
    try:
        yield
    finally:
        ops.compute_relocation, ops.quat_scale_to_covar_preci = saved


@dataclass
class DeviceMCMCStrategy(MCMCStrategy):
    """gsplat's MCMCStrategy, on whichever device the parameters are."""

    def step_post_backward(self, params: Any, optimizers: Any, state: Any, step: int, info: Any,  # type: ignore[override]
                           lr: float) -> None:
        with _torch_ops_for_cpu(params["means"].device.type == "cpu"):
            super().step_post_backward(params, optimizers, state, step, info, lr)

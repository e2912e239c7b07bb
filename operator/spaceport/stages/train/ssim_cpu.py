"""SSIM on the CPU as compiled kernels, forward and hand-derived backward.

Exactly :func:`metrics.ssim_torch`'s definition (11-tap Gaussian window, sigma 1.5, separable, valid
region only, C1 = 0.01^2, C2 = 0.03^2, mean over channels and pixels), but the blurs run as SIMD loops on
all cores instead of torch's depthwise convolutions, which on one thread cost ~35 ms of a ~150 ms
training step at 320x240 (forward and backward); these take a few. Only the rendered image gets a
gradient. Tests compare values and gradients with the torch version in float64.

With ``mx = B(x)``, ``sxx = B(x^2)``, ``sxy = B(xy)`` (B the blur) and
``s = A1 A2 / (B1 B2)``, ``A1 = 2 mx my + C1``, ``A2 = 2 (sxy - mx my) + C2``,
``B1 = mx^2 + my^2 + C1``, ``B2 = sxx - mx^2 + syy - my^2 + C2``:
``ds/dsxy = 2 A1 / (B1 B2)``, ``ds/dsxx = -s / B2`` and
``ds/dmx = 2 my (A2 - A1) / (B1 B2) - 2 mx s (1 / B1 - 1 / B2)``; then
``dL/dx = B^T(dL/dmx) + 2 x B^T(dL/dsxx) + y B^T(dL/dsxy)``, B^T being the blur's transpose (a full
convolution: the valid blur's inputs are its outputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from spaceport.stages.train.metrics import gaussian_window
from spaceport.stages.train.rasterizer_cpu import FASTMATH

C1, C2 = 0.01**2, 0.03**2
TAPS = 11


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def blur_valid(src: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` -> ``[C, H - 10, W - 10]``: the window applied along x, then y, where it fits."""
    c, h, wd = src.shape
    ho, wo = h - TAPS + 1, wd - TAPS + 1
    across = np.empty((c, h, wo), src.dtype)
    for r in prange(c * h):
        row, out = src[r // h, r % h], across[r // h, r % h]
        for j in range(wo):
            acc = src.dtype.type(0.0)
            for k in range(TAPS):  # a constant trip count: unrolled, and the loop over j vectorised
                acc += w[k] * row[j + k]
            out[j] = acc
    blurred = np.empty((c, ho, wo), src.dtype)
    for r in prange(c * ho):
        ch, i = r // ho, r % ho
        rows, out = across[ch, i:i + TAPS], blurred[ch, i]
        for j in range(wo):
            acc = src.dtype.type(0.0)
            for k in range(TAPS):
                acc += w[k] * rows[k, j]
            out[j] = acc
    return blurred


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def blur_transpose(src: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The transpose of :func:`blur_valid`: ``[C, H - 10, W - 10]`` -> ``[C, H, W]`` (zero beyond the edges)."""
    c, ho, wo = src.shape
    h, wd = ho + TAPS - 1, wo + TAPS - 1
    padded = np.zeros((c, ho + 2 * (TAPS - 1), wo), src.dtype)  # rows i - k out of range read zeros
    padded[:, TAPS - 1:TAPS - 1 + ho] = src
    down = np.zeros((c, h, wd + TAPS - 1), src.dtype)  # columns padded the same way for the second pass
    for r in prange(c * h):
        ch, i = r // h, r % h
        rows, out = padded[ch, i:i + TAPS], down[ch, i, TAPS - 1:TAPS - 1 + wo]
        for j in range(wo):
            acc = src.dtype.type(0.0)
            for k in range(TAPS):
                acc += w[TAPS - 1 - k] * rows[k, j]
            out[j] = acc
    full = np.empty((c, h, wd), src.dtype)
    for r in prange(c * h):
        row, out = down[r // h, r % h], full[r // h, r % h]
        for j in range(wd):
            acc = src.dtype.type(0.0)
            for k in range(TAPS):
                acc += w[TAPS - 1 - k] * row[j + k]
            out[j] = acc
    return full


@njit(parallel=True, cache=True)
def channel_stats(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Channel-planar ``[C, H, W]`` images -> ``[5C, H, W]``: x, y, x^2, y^2, xy."""
    c, h, w = x.shape
    out = np.empty((5 * c, h, w), x.dtype)
    for r in prange(c * h):
        ch, i = r // h, r % h
        a, b = x[ch, i], y[ch, i]
        out[ch, i] = a
        out[c + ch, i] = b
        out[2 * c + ch, i] = a * a
        out[3 * c + ch, i] = b * b
        out[4 * c + ch, i] = a * b
    return out


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def ssim_map_grads(stats: np.ndarray, channels: int, scale: float) -> tuple[float, np.ndarray]:
    """From the blurred stats ``[15, h, w]``: mean SSIM and ``scale * (ds/dmx, ds/dsxx, ds/dsxy)`` as
    ``[9, h, w]`` (three maps per channel)."""
    _, h, w = stats.shape
    dtype = stats.dtype.type
    c1, c2, one, two, k = dtype(C1), dtype(C2), dtype(1.0), dtype(2.0), dtype(scale)
    grads = np.empty((3 * channels, h, w), stats.dtype)
    totals = np.zeros(channels * h)
    for r in prange(channels * h):
        ch, i = r // h, r % h
        acc = 0.0
        for j in range(w):
            mx, my = stats[ch, i, j], stats[channels + ch, i, j]
            sxx, syy = stats[2 * channels + ch, i, j], stats[3 * channels + ch, i, j]
            sxy = stats[4 * channels + ch, i, j]
            a1 = two * mx * my + c1
            a2 = two * (sxy - mx * my) + c2
            b1 = mx * mx + my * my + c1
            b2 = sxx - mx * mx + syy - my * my + c2
            inv = one / (b1 * b2)
            s = a1 * a2 * inv
            acc += s
            grads[ch, i, j] = k * (two * my * (a2 - a1) * inv - two * mx * s * (one / b1 - one / b2))
            grads[channels + ch, i, j] = k * (-s / b2)
            grads[2 * channels + ch, i, j] = k * (two * a1 * inv)
        totals[r] = acc
    return totals.sum() / (channels * h * w), grads


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def image_grad(x: np.ndarray, y: np.ndarray, back: np.ndarray, upstream: float) -> np.ndarray:
    """``dL/dx``, channel-planar ``[C, H, W]``, from the transposed-blurred maps ``back [3C, H, W]``."""
    c, h, w = x.shape
    out = np.empty_like(x)
    two, v = x.dtype.type(2.0), x.dtype.type(upstream)
    for r in prange(c * h):
        ch, i = r // h, r % h
        a, b, o = x[ch, i], y[ch, i], out[ch, i]
        gm, gxx, gxy = back[ch, i], back[c + ch, i], back[2 * c + ch, i]
        for j in range(w):
            o[j] = v * (gm[j] + two * a[j] * gxx[j] + b[j] * gxy[j])
    return out


class SSIM(torch.autograd.Function):
    """Mean SSIM of two ``[H, W, C]`` CPU images (at least 11x11); differentiable in the first."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        xa = x.detach().permute(2, 0, 1).contiguous().numpy()  # channel-planar: rows are SIMD-friendly
        ya = y.detach().to(x.dtype).permute(2, 0, 1).contiguous().numpy()
        w = gaussian_window(x.device, x.dtype, TAPS).numpy()  # the torch version's window, one definition
        blurred = blur_valid(channel_stats(xa, ya), w)
        mean, grads = ssim_map_grads(blurred, xa.shape[0], 1.0 / blurred[0].size / xa.shape[0])
        ctx.arrays = (xa, ya, w, grads)
        return torch.tensor(mean, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, v: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        xa, ya, w, grads = ctx.arrays
        back = blur_transpose(grads, w)
        return torch.from_numpy(image_grad(xa, ya, back, float(v))).permute(1, 2, 0), None


def ssim_cpu(a: Tensor, b: Tensor) -> Tensor:
    return SSIM.apply(a, b)

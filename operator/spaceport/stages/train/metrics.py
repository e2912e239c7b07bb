"""Image metrics for the loss and for evaluation: PSNR, SSIM (11x11 Gaussian window, sigma 1.5), LPIPS."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_WINDOWS: dict[tuple[str, torch.dtype], Tensor] = {}


def gaussian_window(device: torch.device, dtype: torch.dtype, size: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM's normalised 1-D Gaussian window (made once per device and dtype)."""
    key = (str(device), dtype)
    if key not in _WINDOWS:
        x = torch.arange(size, dtype=torch.float64) - size // 2
        g = torch.exp(-(x * x) / (2 * sigma * sigma))
        _WINDOWS[key] = (g / g.sum()).to(device=device, dtype=dtype)
    return _WINDOWS[key]


def _blur(x: Tensor) -> Tensor:
    """Separable Gaussian blur of ``[C, H, W]`` over the valid region only: no zero padding at the borders."""
    w = gaussian_window(x.device, x.dtype)
    c = x.shape[0]
    x = F.conv2d(x[None], w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of two ``[H, W, 3]`` images in 0..1 (differentiable in ``a``).

    On CPU the compiled kernels of :mod:`ssim_cpu` (same definition, ~3x less CPU time than torch's
    depthwise convolutions on one thread); elsewhere :func:`ssim_torch`.
    """
    if a.device.type == "cpu" and min(a.shape[:2]) >= 11 and a.dtype in (torch.float32, torch.float64):
        from spaceport.stages.train.ssim_cpu import ssim_cpu

        return ssim_cpu(a, b)
    return ssim_torch(a, b)


def ssim_torch(a: Tensor, b: Tensor) -> Tensor:
    """:func:`ssim` in plain torch: the definition, the CUDA path and the tests' reference."""
    x, y = a.permute(2, 0, 1), b.permute(2, 0, 1)
    if min(x.shape[1:]) < 11:
        return 1 - (x - y).abs().mean()  # too small for the window; only happens in toy inputs
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], 0))
    c = x.shape[0]
    mx, my, xx, yy, xy = stats.split(c, 0)
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def psnr(a: Tensor, b: Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b) ** 2).mean())
    return 100.0 if mse <= 1e-10 else -10.0 * math.log10(mse)


LpipsScore = Callable[[Tensor, Tensor], float]


def lpips_scorer(device: str) -> tuple[LpipsScore | None, str]:
    """LPIPS (AlexNet, v0.1; lower is closer) of two ``[H, W, 3]`` images in 0..1, or ``(None, why not)``.

    It runs on CUDA with the ``lpips`` package (the stage image's ``gpu`` extra, with its AlexNet
    weights fetched when the image is built); on CPU the held-out views get PSNR and SSIM only.
    """
    if not device.startswith("cuda"):
        return None, "LPIPS is computed on GPU only"
    try:
        import lpips
    except ImportError:
        return None, "LPIPS needs the lpips package (pip install 'spaceport[gpu]')"
    try:
        net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    except Exception as e:  # its AlexNet weights are downloaded on first use: no network, no weights
        return None, f"LPIPS weights could not be loaded ({type(e).__name__}: {e})"

    def score(a: Tensor, b: Tensor) -> float:
        with torch.no_grad():  # lpips takes [N, 3, H, W] in -1..1
            return float(net(a.clamp(0, 1).permute(2, 0, 1)[None] * 2 - 1, b.permute(2, 0, 1)[None] * 2 - 1))

    return score, ""

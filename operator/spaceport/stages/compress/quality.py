"""Quality of the compressed scene: PSNR and SSIM of its renders against the uncompressed scene's, and,
where the training stage left its held-out photos, the PSNR lost against those photos (``psnrDropDb``).

Renders use the training stage's renderer, which the registry names (``TRAIN.renderer``), so the numbers judge
the scene the way training saw it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from spaceport.api import TRAIN
from spaceport.cameras import Camera
from spaceport.contract import resolve
from spaceport.splats import GaussianScene


def scaled(camera: Camera, max_side: int) -> Camera:
    """The camera with its image shrunk so the longest side is ≤ max_side (intrinsics scaled with it)."""
    factor = max_side / max(camera.width, camera.height)
    return camera if factor >= 1.0 else camera.scaled(factor)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over an 11x11 Gaussian window (sigma 1.5), per channel, as usual for splat papers."""
    from scipy.ndimage import gaussian_filter

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = 0.01**2, 0.03**2

    def blur(x: np.ndarray) -> np.ndarray:
        return gaussian_filter(x, sigma=(1.5, 1.5, 0), truncate=3.5, mode="reflect")

    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


@dataclass
class QualityReport:
    psnr_db: float  # mean over views of PSNR(compressed render vs uncompressed render)
    ssim: float
    views: int
    renderer: str
    psnr_drop_db: float | None = None  # mean PSNR lost against the held-out photos (None: no photos)
    truth_views: int = 0


def _spread(cameras: Sequence[Camera], count: int) -> list[Camera]:
    if count <= 0:
        return []
    if count >= len(cameras):
        return list(cameras)
    step = len(cameras) / count
    return [cameras[int(i * step)] for i in range(count)]


def pick_views(cameras: Sequence[Camera], count: int) -> list[Camera]:
    """``count`` cameras: held-out ones first (the honest views, and the only ones with a photo to measure
    the PSNR drop against), then training ones; each group spread evenly over the flight."""
    held = _spread([c for c in cameras if c.held_out], count)
    return held + _spread([c for c in cameras if not c.held_out], count - len(held))


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    pil = Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(pil.resize((width, height), Image.Resampling.BOX), np.float32) / 255.0


def compare(original: GaussianScene, compressed: GaussianScene, cameras: Sequence[Camera], *, max_side: int,
            device: str = "cpu", progress: Callable[[float], None] | None = None,
            truth: dict[str, np.ndarray] | None = None) -> QualityReport:
    """Render both scenes from each camera. Where ``truth`` has the photo of a camera (by name, [H, W, 3]
    in 0..1), also measure how much PSNR against that photo compression cost."""
    render = resolve(TRAIN.renderer or "")
    psnrs, ssims, drops = [], [], []
    for i, cam in enumerate(cameras):
        view = scaled(cam, max_side)
        ref, got = render(original, view, device=device), render(compressed, view, device=device)
        psnrs.append(min(psnr(got, ref), 100.0))
        ssims.append(ssim(got, ref))
        photo = (truth or {}).get(cam.name)
        if photo is not None:
            photo = _resized(photo, view.width, view.height)
            drops.append(psnr(ref, photo) - psnr(got, photo))
        if progress:
            progress((i + 1) / len(cameras))
    drop = float(np.mean(drops)) if drops else None
    return QualityReport(float(np.mean(psnrs)), float(np.mean(ssims)), len(cameras), "train.render", drop,
                         len(drops))

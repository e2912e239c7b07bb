"""Quality of the compressed scene: PSNR and SSIM of its renders against the uncompressed scene's, and,
where the training stage left its held-out photos, the PSNR lost against those photos (``psnrDropDb``).

Renders use the training stage's rasterizer (``spaceport.stages.train.render``) when it is importable;
otherwise a small brute-force renderer here (every Gaussian against every pixel: fine for the small
views used for this measurement, and exact, so it is a fair judge of what compression changed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spaceport.splats import GaussianScene

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


@dataclass
class ViewCamera:
    """The fields of the training stage's Camera that rendering needs (same names)."""

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray
    held_out: bool = False


def scaled(camera: Any, max_side: int) -> Any:
    """The camera with its image shrunk so the longest side is ≤ max_side (intrinsics scaled with it)."""
    s = min(1.0, max_side / max(camera.width, camera.height))
    if s >= 1.0:
        return camera
    return replace(camera, width=max(1, round(camera.width * s)), height=max(1, round(camera.height * s)),
                   fx=camera.fx * s, fy=camera.fy * s, cx=camera.cx * s, cy=camera.cy * s)


def sh_colour(scene: GaussianScene, dirs: np.ndarray) -> np.ndarray:
    """RGB of each Gaussian seen along unit ``dirs`` [N, 3] (3DGS convention: SH + 0.5, clamped at 0)."""
    c = SH_C0 * scene.sh0.astype(np.float64)
    k = scene.shN.shape[1]
    if k:
        x, y, z = dirs[:, 0:1], dirs[:, 1:2], dirs[:, 2:3]
        sh = scene.shN.astype(np.float64)
        basis = [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
        if k > 3:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            basis += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz,
                      SH_C2[4] * (xx - yy)]
        if k > 8:
            basis += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
                      SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                      SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
        for j, b in enumerate(basis):
            c = c + b * sh[:, j]
    return np.maximum(c + 0.5, 0.0)


def brute_force_render(scene: GaussianScene, camera: Any, device: str = "cpu") -> np.ndarray:
    """[H, W, 3] float32 in 0..1, black background: EWA splatting, front-to-back, per pixel exact."""
    del device
    w2c = np.asarray(camera.world_to_camera, np.float64)
    rot, trans = w2c[:3, :3], w2c[:3, 3]
    p = scene.means.astype(np.float64) @ rot.T + trans
    keep = p[:, 2] > 0.01
    s = scene.subset(keep)
    p = p[keep]
    if len(p) == 0:
        return np.zeros((camera.height, camera.width, 3), np.float32)
    q = s.quats.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    r = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)  # [N, 3, 3]
    m = r * np.exp(s.scales.astype(np.float64))[:, None, :]
    cov_cam = rot @ (m @ m.transpose(0, 2, 1)) @ rot.T
    zc = p[:, 2]
    jac = np.zeros((len(p), 2, 3))
    jac[:, 0, 0], jac[:, 0, 2] = camera.fx / zc, -camera.fx * p[:, 0] / zc**2
    jac[:, 1, 1], jac[:, 1, 2] = camera.fy / zc, -camera.fy * p[:, 1] / zc**2
    cov2 = jac @ cov_cam @ jac.transpose(0, 2, 1) + 0.3 * np.eye(2)
    det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] ** 2
    inv = np.stack([cov2[:, 1, 1], -cov2[:, 0, 1], cov2[:, 0, 0]], 1) / det[:, None]
    centre = np.stack([camera.fx * p[:, 0] / zc + camera.cx, camera.fy * p[:, 1] / zc + camera.cy], 1)
    cam_pos = -rot.T @ trans
    dirs = s.means - cam_pos
    colour = sh_colour(s, dirs / np.linalg.norm(dirs, axis=1, keepdims=True))
    opacity = 1.0 / (1.0 + np.exp(-s.opacities.astype(np.float64)))
    order = np.argsort(zc, kind="stable")
    inv, centre, colour, opacity = inv[order], centre[order], colour[order], opacity[order]
    ys, xs = np.mgrid[0:camera.height, 0:camera.width]
    pix = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    out = np.zeros((len(pix), 3))
    chunk = max(1, (1 << 22) // len(order))
    for a in range(0, len(pix), chunk):
        d = pix[a:a + chunk, None, :] - centre[None]  # [P, N, 2]
        power = -0.5 * (inv[:, 0] * d[..., 0] ** 2 + 2 * inv[:, 1] * d[..., 0] * d[..., 1] + inv[:, 2] * d[..., 1] ** 2)
        alpha = np.minimum(0.99, opacity * np.exp(np.minimum(power, 0.0)))
        alpha = np.where(alpha < 1.0 / 255.0, 0.0, alpha)
        trans_before = np.cumprod(np.concatenate([np.ones((len(d), 1)), 1 - alpha[:, :-1]], 1), 1)
        out[a:a + chunk] = (alpha * trans_before) @ colour
    return np.clip(out, 0, 1).reshape(camera.height, camera.width, 3).astype(np.float32)


def renderer() -> tuple[Callable[..., np.ndarray], str]:
    """The training stage's ``render`` when it exists, else ours; with a name for the metrics."""
    try:
        from spaceport.stages.train.render import render
    except ImportError:
        return brute_force_render, "brute-force"
    return render, "train.render"


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


def pick_views(cameras: Sequence[Any], count: int) -> list[Any]:
    """``count`` cameras spread evenly over the list (held-out ones first: they are the honest views)."""
    ordered = [c for c in cameras if c.held_out] + [c for c in cameras if not c.held_out]
    if count >= len(ordered):
        return list(ordered)
    step = len(ordered) / count
    return [ordered[int(i * step)] for i in range(count)]


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    pil = Image.fromarray(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(pil.resize((width, height), Image.Resampling.BOX), np.float32) / 255.0


def compare(original: GaussianScene, compressed: GaussianScene, cameras: Sequence[Any], *, max_side: int,
            device: str = "cpu", progress: Callable[[float], None] | None = None,
            truth: dict[str, np.ndarray] | None = None) -> QualityReport:
    """Render both scenes from each camera. Where ``truth`` has the photo of a camera (by name, [H, W, 3]
    in 0..1), also measure how much PSNR against that photo compression cost."""
    render, name = renderer()
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
    return QualityReport(float(np.mean(psnrs)), float(np.mean(ssims)), len(cameras), name, drop, len(drops))

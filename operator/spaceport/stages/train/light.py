"""Light that changes with the viewing direction, shared by the whole scene and learned with it.

Photos from the air carry a bright halo around the point opposite the sun (the opposition effect, or hotspot:
every leaf and clod there hides its own shadow; the plane's shadow sits at its centre). It moves with the
camera: the same field is brighter in the photo that sees it in line with the sun than in the next one. A
scene fitted to both explains the difference with floaters and view-dependent colour that do not carry over
to a new view. The halo depends on the direction a ray travels in the world, not on the point it meets, so
here one gain per world direction is learned for the whole scene: a cube map of log-gains, ``FACE_CELLS``
cells a face (~6 degrees), applied to the render before the loss. Every training photo constrains it; none
is fitted on its own. It is a property of the scene's light, learned from the training photos only, so the
render of a held-out photo can take it too (``psnrPhotographed``); the headline PSNR renders the splats alone.

The gain is evaluated on a coarse grid of rays (every ``STRIDE``-th pixel) and interpolated: it varies
over tens of pixels, and a full-size view costs ~8k lookups instead of ~500k.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from spaceport.stages.train.learned import LearnedTerm
from spaceport.stages.train.render import Camera

LR = 5e-3
"""Adam's learning rate for the log-gains."""
FACE_CELLS = 16
"""Cells along a cube face's edge: 90 degrees over 16, ~6 degrees, finer than a hotspot's ~10-degree radius."""
STRIDE = 8
"""Pixels between the rays the gain is evaluated on."""
SMOOTH_WEIGHT = 1e-2
"""Weight of the summed squared differences of neighbouring cells: a smooth field, not a per-view fit. Where
few photos see each direction (the tests' 9 views around a scene) 1e-3 let the field take up other errors
(gains 0.89-1.19 with constant light, against 0.95-1.06 at 1e-2); on a survey both did alike."""
MEAN_WEIGHT = 1.0
"""Weight of the squared mean log-gain over a training view: the splats keep the photos' brightness."""


class DirectionalLight(LearnedTerm):
    """A gain per world direction (a cube map of log-gains), the same for every photo."""

    STATE_KEY = "grid"

    def __init__(self, lr: float, device: str) -> None:
        self.grid = self._learn(torch.zeros(6, 1, FACE_CELLS, FACE_CELLS, device=device), lr)
        self._rays: dict[tuple[int, int, float, float, float, float], Tensor] = {}
        self._upsample: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        self._last_mean: Tensor | None = None

    def _camera_rays(self, cam: Camera) -> Tensor:
        """``[h, w, 3]`` unit ray directions in the camera's frame on the coarse grid of pixel centres."""
        key = (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)
        if key not in self._rays:
            device = self.grid.device
            h, w = math.ceil(cam.height / STRIDE) + 1, math.ceil(cam.width / STRIDE) + 1
            ys = torch.linspace(0.5, cam.height - 0.5, h, device=device)
            xs = torch.linspace(0.5, cam.width - 0.5, w, device=device)
            y, x = torch.meshgrid((ys - cam.cy) / cam.fy, (xs - cam.cx) / cam.fx, indexing="ij")
            rays = torch.stack([x, y, torch.ones_like(x)], -1)
            self._rays[key] = rays / rays.norm(dim=-1, keepdim=True)
        return self._rays[key]

    def _log_gain(self, cam: Camera) -> Tensor:
        """``[h, w]`` log-gain on the coarse grid of ``cam``'s rays."""
        rays = self._camera_rays(cam)
        rotation = torch.as_tensor(cam.world_to_camera[:3, :3], dtype=torch.float32, device=rays.device)
        d = (rays @ rotation).reshape(-1, 3)  # world = R^T camera; as rows, camera @ R
        axis = d.abs().argmax(-1)
        major = d.gather(1, axis[:, None])[:, 0]
        face = 2 * axis + (major < 0).long()
        others = torch.tensor([[1, 2], [0, 2], [0, 1]], device=d.device)[axis]
        uv = d.gather(1, others) / major.abs()[:, None]
        limit = 1 - 1 / FACE_CELLS  # stay within a face's outer cell centres: no blending across faces
        uv = uv.clamp(-limit, limit)
        samples = F.grid_sample(self.grid, uv[None, None].expand(6, 1, -1, 2), align_corners=False)
        values = samples[:, 0, 0].gather(0, face[None])[0]
        h, w = rays.shape[:2]
        return values.reshape(h, w)

    def _interpolation(self, size: int, coarse: int) -> Tensor:
        """``[size, coarse]`` linear interpolation from ``coarse`` samples spanning the first to the last pixel."""
        at = torch.linspace(0, coarse - 1, size, device=self.grid.device)
        low = at.floor().clamp(max=coarse - 2).long()
        frac = at - low
        m = torch.zeros(size, coarse, device=self.grid.device)
        m.scatter_(1, low[:, None], (1 - frac)[:, None])
        m.scatter_(1, low[:, None] + 1, frac[:, None])
        return m

    def gain(self, cam: Camera) -> Tensor:
        """``[H, W, 1]`` gain at each pixel of ``cam`` (differentiable)."""
        log_gain = self._log_gain(cam)
        self._last_mean = log_gain.mean()
        key = (cam.width, cam.height)
        if key not in self._upsample:
            h, w = log_gain.shape
            self._upsample[key] = (self._interpolation(cam.height, h), self._interpolation(cam.width, w))
        rows, cols = self._upsample[key]  # separable bilinear upsampling as two small matrix products
        return (rows @ torch.exp(log_gain) @ cols.T)[..., None]

    def apply(self, image: Tensor, cam: Camera) -> Tensor:
        return image * self.gain(cam)

    def penalty(self) -> Tensor:
        """Smoothness of the field, and the last view's mean log-gain near 0 (call after :meth:`apply`)."""
        g = self.grid[:, 0]
        smooth = ((g[:, 1:] - g[:, :-1]) ** 2).sum() + ((g[:, :, 1:] - g[:, :, :-1]) ** 2).sum()
        mean = self._last_mean if self._last_mean is not None else g.new_zeros(())
        return SMOOTH_WEIGHT * smooth + MEAN_WEIGHT * mean ** 2


    @torch.no_grad()
    def range(self) -> list[float]:
        """The smallest and largest gain the field holds."""
        g = torch.exp(self.grid)
        return [round(float(g.min()), 4), round(float(g.max()), 4)]

"""Per-photo bilateral grids (``appearance: bilateral``): a colour transform that varies over the photo and with
its brightness, for cameras whose processing is not one gain per photo.

Phones and many drones tone-map each photo locally (HDR modes, shadow lifting, sky darkening): the same wall
comes out brighter in one photo's shadows than in another's highlights, which one affine transform per photo
(``appearance.py``) cannot take up. Following Bilateral Guided Radiance Field Processing (Wang et al. 2024,
the option gsplat's trainer offers on CUDA), each training photo gets a grid of affine colour transforms over
(x, y, brightness), ``GRID_W x GRID_H`` cells across the image and ``GRID_L`` brightness levels. A render is
sliced through its photo's grid: each pixel takes the transform trilinearly interpolated at its position and
its own rendered brightness, so a transform follows the image's edges instead of blurring across them. The
grids hold offsets from the identity (zeros: no change), are trained by their own Adam, and kept smooth by a
total-variation penalty on the visited photo's grid. Plain torch: the same on the CPU and on CUDA.

As with the per-photo transforms, held-out photos are never fitted: the headline metrics render the splats
alone, and their capture-order neighbours' mean grid is reported beside it (``psnrNeighbourColour``); the grids'
mean over the training photos is held at the identity, so the exported splats have an average photo's colours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spaceport.stages.train.appearance import MEAN_WEIGHT, capture_neighbours
from spaceport.stages.train.learned import LearnedTerm

GRID_W, GRID_H, GRID_L = 16, 16, 8
"""Cells across and down a photo, and brightness levels (the paper's and gsplat's sizes)."""
TV_WEIGHT = 10.0
"""Weight of the visited grid's total variation (mean squared differences of neighbouring cells, gsplat's 10)."""
LUMA = (0.299, 0.587, 0.114)
"""The brightness a pixel is sliced at: Rec. 601 luma of the render."""


class PhotoBilateralGrid(LearnedTerm):
    """One bilateral grid of ``[3, 4]`` colour transforms per training photo (by name)."""

    STATE_KEY = "delta"

    def __init__(self, train_names: list[str], all_names: list[str], lr: float, device: str) -> None:
        self.names = list(train_names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.order = sorted(all_names)
        self.delta = self._learn(torch.zeros(len(self.names), 12, GRID_L, GRID_H, GRID_W, device=device), lr)
        self._luma = torch.tensor(LUMA, device=device)

    def transform(self, image: Tensor, grid: Tensor) -> Tensor:
        """``image [H, W, 3]`` through the transforms of ``grid [12, L, GH, GW]`` sliced at each pixel."""
        h, w = image.shape[:2]
        ys = torch.linspace(-1, 1, h, device=image.device)[:, None].expand(h, w)
        xs = torch.linspace(-1, 1, w, device=image.device)[None, :].expand(h, w)
        zs = (image.detach() @ self._luma).clamp(0, 1) * 2 - 1  # the guide; the grid's gradient comes through
        where = torch.stack([xs, ys, zs], -1)[None, None]  # [1, 1, H, W, (x, y, z)]
        sliced = F.grid_sample(grid[None], where, align_corners=True, padding_mode="border")  # [1, 12, 1, H, W]
        d = sliced[0, :, 0].permute(1, 2, 0).reshape(h, w, 3, 4)
        return image + (d[..., :3] @ image[..., None])[..., 0] + d[..., 3]

    def apply(self, image: Tensor, name: str) -> Tensor:
        """The render of training photo ``name`` as that photo's camera saw it (differentiable)."""
        return self.transform(image, self.delta[self.index[name]])

    @torch.no_grad()
    def apply_held_out(self, image: Tensor, name: str, mode: str = "neighbours") -> Tensor:
        """A held-out photo's render: through its neighbours' mean grid (``neighbours``) or as is (``identity``)."""
        near = capture_neighbours(self.order, self.index, name) if mode == "neighbours" else []
        if not near:
            return image
        return self.transform(image, self.delta[near].mean(0))

    def penalty(self, name: str) -> Tensor:
        """Total variation of training photo ``name``'s grid, and the squared mean offset over all training photos
        (the gauge: the splats keep an average photo's colours)."""
        g = self.delta[self.index[name]]
        tv = sum(((g.narrow(axis, 1, g.shape[axis] - 1) - g.narrow(axis, 0, g.shape[axis] - 1)) ** 2).mean()
                 for axis in (1, 2, 3))
        return TV_WEIGHT * tv + MEAN_WEIGHT * (self.delta.mean(0) ** 2).sum() / (GRID_L * GRID_H * GRID_W)


    def summary(self) -> dict[str, float]:
        """The largest gain and offset departures from the identity in any photo's grid cell."""
        d = self.delta.detach().reshape(len(self.names), 3, 4, -1)
        if not len(d):
            return {"photoGainSpread": 0.0, "photoOffsetSpread": 0.0}
        gains = torch.diagonal(d[:, :, :3], dim1=1, dim2=2)
        return {"photoGainSpread": round(float(gains.abs().max()), 4),
                "photoOffsetSpread": round(float(d[:, :, 3].abs().max()), 4)}

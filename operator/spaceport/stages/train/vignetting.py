"""Lens vignetting learned with the scene: each camera darkens its photos towards the corners.

Drone and many other cameras leave vignetting in their JPEGs: on a real survey the mean of all photos,
each normalised to its own mean, is 1.14 at the centre and 0.77-0.87 in the corners (8.7% RMS). The same
field then comes out brighter in a photo that saw it in the middle than in one that saw it in a corner,
and a scene fitted to both as they are explains the difference with view-dependent colour, haze and
floaters. Here each camera (each group of photos with the same intrinsics) gets a radial gain
``g(r) = 1 + a1 r^2 + a2 r^4 + a3 r^6``, ``r`` the distance from the principal point over its distance
to the farthest corner, applied to the render before the loss and trained by its own Adam: the splats
learn the scene's colours as an average photo shows them, the gains the fall-off. The gain is divided by
its mean over the image, so the gains and the splats' brightness do not trade against each other (with
``g(0) = 1`` instead, the splats took the centre's brightness and rendered alone 2.6 dB worse on a survey).

It is a property of the camera, learned from the training photos only; the headline metrics still
render the splats alone (as a viewer shows them), and the render through the camera's gain is reported
beside them as ``psnrVignetted``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spaceport.stages.train.learned import LearnedTerm
from spaceport.stages.train.render import Camera

LR = 2e-3
"""Adam's learning rate for the gain's coefficients (a corner gain of 0.8 is reached in a few hundred visits)."""
PRIOR_WEIGHT = 0.005
"""Weight of the squared corner fall-off ``(g(1) - 1)^2`` in the loss: a gain moves off 1 only where the photos
consistently pull it (a scene still being formed otherwise lends it a fall-off it then has to unlearn). On
the tests' ground scene, 0.005 learns 0.74 for a true 0.65 and stays within 0.02 of 1 without vignetting;
0.05 held a true fall-off back (0.86)."""
TERMS = 3
"""Even powers of ``r`` in the gain: r^2, r^4, r^6 (the model COLMAP and most lens profiles use)."""


def camera_key(cam: Camera) -> tuple[float, ...]:
    """Photos of one camera share intrinsics; as fractions of the image size, so half-size views match."""
    return (round(cam.fx / cam.width, 4), round(cam.fy / cam.height, 4), round(cam.cx / cam.width, 4),
            round(cam.cy / cam.height, 4), round(cam.width / cam.height, 4))


class Vignetting(LearnedTerm):
    """A radial gain per camera, looked up by photo name."""

    STATE_KEY = "coeffs"

    def __init__(self, cameras: list[Camera], lr: float, device: str) -> None:
        keys = sorted({camera_key(c) for c in cameras})
        self.group = {c.name: keys.index(camera_key(c)) for c in cameras}
        self.coeffs = self._learn(torch.zeros(len(keys), TERMS, device=device), lr)
        self._radii: dict[tuple[int, int, float, float], Tensor] = {}

    def _r2(self, cam: Camera) -> Tensor:
        key = (cam.width, cam.height, cam.cx, cam.cy)
        if key not in self._radii:
            device = self.coeffs.device
            ys = torch.arange(cam.height, device=device, dtype=torch.float32)[:, None] + 0.5 - cam.cy
            xs = torch.arange(cam.width, device=device, dtype=torch.float32)[None, :] + 0.5 - cam.cx
            corner = max(cam.cx, cam.width - cam.cx) ** 2 + max(cam.cy, cam.height - cam.cy) ** 2
            self._radii[key] = (xs * xs + ys * ys) / corner
        return self._radii[key]

    def gain(self, cam: Camera) -> Tensor:
        """``[H, W, 1]`` gain of ``cam``'s camera at each pixel (differentiable), over its mean over the image."""
        r2 = self._r2(cam)
        a = self.coeffs[self.group[cam.name]]
        fall_off = 1 + r2 * (a[0] + r2 * (a[1] + r2 * a[2]))
        return (fall_off / fall_off.mean())[..., None]

    def apply(self, image: Tensor, cam: Camera) -> Tensor:
        return image * self.gain(cam)

    def penalty(self, cam: Camera) -> Tensor:
        """The prior on ``cam``'s camera: its gain's squared departure from 1 in the corner."""
        return PRIOR_WEIGHT * self.coeffs[self.group[cam.name]].sum() ** 2


    @torch.no_grad()
    def corner_gains(self) -> list[float]:
        """Each camera's fall-off in its farthest corner (r = 1) against its centre: 1.0 for no vignetting."""
        return [round(float(1 + a.sum()), 4) for a in self.coeffs]

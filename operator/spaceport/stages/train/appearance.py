"""Per-photo colour transforms learned with the scene: exposure and white balance of real cameras.

Real cameras meter each photo on its own (auto exposure, auto white balance), so the same field is a few
percent brighter or bluer in one photo than in the next. A scene fitted to all of them as they are has to
explain those differences with geometry and view-dependent colour: haze, blotches and floaters that
brighten a patch in the photos that were brighter. Here each training photo gets its own colour
transform ``rgb' = M rgb + b``, initially the identity, applied to the render before the loss and trained
by its own Adam, so the splats learn one consistent colour and the transforms take up the differences:
``exposure`` keeps ``M`` diagonal (a gain and an offset per channel, 6 numbers: exposure and white
balance as a camera applies them), ``affine`` lets it mix channels (12 numbers).

A photo is visited a dozen times in a short run, and Adam moves a parameter by about its learning rate
whatever the size of its gradient: unconstrained, the transforms soak up each visit's misfit of a scene
still being formed (neighbouring photos came out with opposite offsets of 0.05 on a real survey). A prior
``PRIOR_WEIGHT * |delta|^2`` on the visited photo's offsets from the identity keeps a transform where its
photo's gradient consistently pulls it, and near the identity otherwise.

Held-out photos are never fitted to their own pixels: the headline metrics render the splats alone (the
identity, as a viewer shows them); the mean of the transforms of their capture-order neighbours (the
training photos just before and after them in name order, the order a drone or a walk takes them) is
reported beside it. The transforms' mean over the training photos is held at the identity by a penalty,
so the exported splats (which carry no transform) have the colours of an average photo.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spaceport.stages.train.learned import LearnedTerm

MEAN_WEIGHT = 1.0
"""Weight of the squared mean of the transforms' offsets from the identity (keeps the splats' colours an
average photo's; the transforms are 12 numbers each, so this costs nothing)."""
PRIOR_WEIGHT = 0.1
"""Weight of the visited photo's squared offsets from the identity. L1 pulls a gain with a gradient of
at most the mean pixel value (~0.5 in a survey) while its photo is consistently off, so corrections up to
a few times that stay free, while pulls that change sign from visit to visit are drawn back."""
MODES = ("exposure", "affine")


def capture_neighbours(order: list[str], index: dict[str, int], name: str) -> list[int]:
    """Indices (in ``index``, the training photos) of the photos nearest to ``name`` in ``order`` (all photos by
    name): the one before and the one after (one at either end of the flight; none without training photos)."""
    pos = order.index(name)
    found = []
    for step in (-1, 1):
        i = pos + step
        while 0 <= i < len(order) and order[i] not in index:
            i += step
        if 0 <= i < len(order):
            found.append(index[order[i]])
    return found


class PhotoColour(LearnedTerm):
    """One affine colour transform per training photo (by name) and how held-out photos borrow them."""

    STATE_KEY = "delta"

    def __init__(self, train_names: list[str], all_names: list[str], lr: float, device: str,
                 mode: str = "exposure") -> None:
        if mode not in MODES:
            raise ValueError(f"colour transform mode {mode!r}; expected one of {', '.join(MODES)}")
        self.names = list(train_names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.order = sorted(all_names)
        # [P, 3, 4]: offsets from [I | 0]; zeros = identity. exposure: only the diagonal and the offset move
        self.delta = self._learn(torch.zeros(len(self.names), 3, 4, device=device), lr)
        self.mask = torch.ones(3, 4, device=device)
        if mode == "exposure":
            self.mask[:, :3] = torch.eye(3, device=device)

    @staticmethod
    def transform(image: Tensor, delta: Tensor) -> Tensor:
        """``image [H, W, 3]`` through ``[I | 0] + delta`` (``[3, 4]``)."""
        return image + image @ delta[:, :3].T + delta[:, 3]

    def offsets(self, index: int | list[int]) -> Tensor:
        """The (masked) offsets from the identity of the photo(s) ``index``: ``[3, 4]`` or ``[k, 3, 4]``."""
        return self.delta[index] * self.mask

    def apply(self, image: Tensor, name: str) -> Tensor:
        """The render of training photo ``name`` as that photo's camera saw it (differentiable)."""
        return self.transform(image, self.offsets(self.index[name]))

    def neighbours(self, name: str) -> list[int]:
        return capture_neighbours(self.order, self.index, name)

    @torch.no_grad()
    def apply_held_out(self, image: Tensor, name: str, mode: str = "neighbours") -> Tensor:
        """A held-out photo's render: through its neighbours' mean transform (``neighbours``) or as is
        (``identity``). Nothing of the held-out photo's own pixels is used."""
        near = self.neighbours(name) if mode == "neighbours" else []
        if not near:
            return image
        return self.transform(image, self.offsets(near).mean(0))

    def penalty(self, name: str) -> Tensor:
        """The prior on training photo ``name``'s offsets, and the squared mean offset over all training
        photos (the gauge: see the module)."""
        prior = PRIOR_WEIGHT * (self.offsets(self.index[name]) ** 2).sum()
        return prior + MEAN_WEIGHT * ((self.delta * self.mask).mean(0) ** 2).sum()


    def summary(self) -> dict[str, float]:
        """How far the photos' transforms spread: the largest gain and offset departures from identity."""
        d = (self.delta * self.mask).detach()
        if not len(d):
            return {"photoGainSpread": 0.0, "photoOffsetSpread": 0.0}
        gains = torch.diagonal(d[:, :, :3], dim1=1, dim2=2)
        return {"photoGainSpread": round(float(gains.abs().max()), 4),
                "photoOffsetSpread": round(float(d[:, :, 3].abs().max()), 4)}

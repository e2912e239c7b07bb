"""Spatial blocks for partitioned training: where each block lies, what it trains on, what it keeps.

The blocks tile the plane the cameras spread over (the two main axes of the camera centres: the ground of a
survey, whatever the model's frame), split like a k-d tree: a cell is cut across its longer side where the
cameras divide in the ratio of the blocks on either side, so every block holds about as many camera positions.
A block's *core* is its cell, reaching to infinity on the outside of the survey, so every point of space lies in
exactly one core. Its *region* is the core widened by ``overlap`` times the cell's size on every inner side:
a block trains on the SfM points in its region and on the photos taken from there or looking into it, and the
merge keeps from each block only the Gaussians in its core. Everything here is pure and deterministic: every
block and the merge plan the same blocks from the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spaceport.contract import BadInputError

MIN_CAMERAS_PER_BLOCK = 2
"""A block needs photos from at least two places to see anything in depth."""

LOOKS_INTO_SHARE = 1 / 3
"""A photo taken outside a block's region trains it when this share of the SfM points it saw lie in the region."""


@dataclass(frozen=True)
class Block:
    index: int
    core: np.ndarray
    """``[2, 2]``: (low, high) per plane axis, infinite on the outside of the survey."""
    region: np.ndarray
    """``[2, 2]``: the core widened by the overlap on its inner sides."""


@dataclass(frozen=True)
class Partition:
    origin: np.ndarray
    """``[3]``: the mean camera centre."""
    axes: np.ndarray
    """``[2, 3]``: the plane's axes (unit vectors, the camera centres' two main directions)."""
    blocks: tuple[Block, ...]

    def plane(self, xyz: np.ndarray) -> np.ndarray:
        """``[N, 2]`` plane coordinates of ``[N, 3]`` points."""
        return (np.asarray(xyz, np.float64) - self.origin) @ self.axes.T

    def in_core(self, index: int, xyz: np.ndarray) -> np.ndarray:
        return _inside(self.plane(xyz), self.blocks[index].core)

    def in_region(self, index: int, xyz: np.ndarray) -> np.ndarray:
        return _inside(self.plane(xyz), self.blocks[index].region)

    def core_of(self, xyz: np.ndarray) -> np.ndarray:
        """Index of the block whose core holds each point."""
        uv = self.plane(xyz)
        out = np.full(len(uv), -1, np.int64)
        for block in self.blocks:
            out[_inside(uv, block.core)] = block.index
        return out

    def views_of(self, index: int, centres: np.ndarray, seen: list[np.ndarray], points: np.ndarray) -> np.ndarray:
        """Which cameras train block ``index``: those taken from inside its region, and those that saw at least
        :data:`LOOKS_INTO_SHARE` of their SfM points (``seen``: per camera, indices into ``points``) inside it."""
        inside = self.in_region(index, points)
        from_inside = self.in_region(index, centres)
        looks_in = np.array([len(ids) > 0 and inside[ids].mean() >= LOOKS_INTO_SHARE for ids in seen], bool)
        return from_inside | looks_in


def _inside(uv: np.ndarray, box: np.ndarray) -> np.ndarray:
    # half-open cells: a point on a border belongs to the block above it, never to two
    return np.all((uv >= box[:, 0]) & (uv < box[:, 1]), axis=1)


def plane_axes(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the camera centres and the two directions they spread most along (a fixed sign each)."""
    origin = centres.mean(axis=0)
    _, _, vt = np.linalg.svd(centres - origin, full_matrices=False)
    axes = vt[:2].copy()
    for axis in axes:  # deterministic orientation: the largest component positive
        if axis[np.argmax(np.abs(axis))] < 0:
            axis *= -1
    return origin, axes


def plan(centres: np.ndarray, count: int, overlap: float) -> Partition:
    """``count`` blocks over the camera centres ``[N, 3]`` (see the module's description)."""
    centres = np.asarray(centres, np.float64)
    if count < 1:
        raise ValueError("count must be positive")
    if len(centres) < MIN_CAMERAS_PER_BLOCK * count:
        raise BadInputError(f"train.blocks: {count} blocks need at least {MIN_CAMERAS_PER_BLOCK * count} registered "
                            f"photos, the SfM model has {len(centres)}; use fewer blocks")
    origin, axes = plane_axes(centres)
    uv = (centres - origin) @ axes.T
    cells: list[tuple[np.ndarray, np.ndarray]] = []
    _split(uv, np.array([[-np.inf, np.inf], [-np.inf, np.inf]]), count, cells)
    blocks = []
    for index, (core, members) in enumerate(cells):
        size = np.maximum(np.ptp(members, axis=0), 1e-9)
        widen = overlap * size
        region = core.copy()
        region[:, 0] = np.where(np.isfinite(core[:, 0]), core[:, 0] - widen, -np.inf)
        region[:, 1] = np.where(np.isfinite(core[:, 1]), core[:, 1] + widen, np.inf)
        blocks.append(Block(index, core, region))
    return Partition(origin, axes, tuple(blocks))


def _split(uv: np.ndarray, box: np.ndarray, count: int, out: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Cut the cell ``box`` holding the camera positions ``uv`` into ``count`` cells, appended to ``out`` in
    order (low side first)."""
    if count == 1:
        out.append((box, uv))
        return
    low = count // 2
    axis = int(np.argmax(np.ptp(uv, axis=0)))
    values = np.sort(uv[:, axis])
    m = min(max(round(len(values) * low / count), MIN_CAMERAS_PER_BLOCK * low),
            len(values) - MIN_CAMERAS_PER_BLOCK * (count - low))
    cut = (values[m - 1] + values[m]) / 2
    below, above = box.copy(), box.copy()
    below[axis, 1] = above[axis, 0] = cut
    _split(uv[uv[:, axis] < cut], below, low, out)
    _split(uv[uv[:, axis] >= cut], above, count - low, out)

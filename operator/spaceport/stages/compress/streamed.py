"""Streamed SOG (PlayCanvas's ``lod-meta.json`` format, version 1): levels of detail cut into spatial chunks.

The layout follows splat-transform 3.7.0's writer (``writeLodSource``), which the viewer's engine reads:

* the centres of every level together are split by a k-d tree (median of the widest axis of their box) while
  a node holds more than ``lod_chunk_splats``, or is wider than ``lod_chunk_extent`` and holds more than
  ``lod_chunk_min_splats`` (nodes of 256 or fewer are never split); each node left is a leaf;
* a leaf's splats of level L go to level L's current file unit ``<L>_<n>/`` (an unbundled SOG), recorded as
  ``lods[L] = {file, offset, count}``; a unit is closed once it holds more than ``lod_chunk_splats``;
* within a unit each leaf's splats are in Morton order, leaves one after another (``offset``);
* every node has ``bound`` (``min``/``max``): the box of its splats' 1-sigma ellipsoids; inner nodes have
  ``children``; no error tables are written (the engine derives them from the counts, as for splat-transform
  run without ``--lod-errors``).

Each unit is a complete SOG with its own codebooks and SH palette (``sog.encode_v2``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spaceport.api.compress import CompressOptions
from spaceport.api.stages import COMPRESS
from spaceport.splats import GaussianScene
from spaceport.stages.compress import sog
from spaceport.stages.compress.decimate import BLOCK, rotations
from spaceport.stages.compress.ordering import morton_order
from spaceport.stages.compress.palette import build_palette

LEAF_SPLATS = 256
"""Nodes this small are never split (splat-transform's k-d tree leaf size)."""
VERSION = 1
Progress = Callable[[float, str], None]


@dataclass
class Layout:
    """Where every splat of every level goes: the tree, and each level's file units as lists of leaves."""

    tree: dict[str, Any]
    filenames: list[str]
    units: dict[int, list[list[np.ndarray]]]  # level -> unit -> the leaves' indices (into that level)
    leaves: int = 0


@dataclass
class StreamedResult:
    counts: list[int]
    units: int
    leaves: int
    bytes: int
    durations: dict[str, float] = field(default_factory=dict)


def half_extents(scene: GaussianScene) -> np.ndarray:
    """Half the axis-aligned box of each splat's 1-sigma ellipsoid."""
    out = np.empty((scene.count, 3))
    for k in range(0, scene.count, BLOCK):
        rot = rotations(scene.quats[k:k + BLOCK])
        out[k:k + BLOCK] = (np.abs(rot) * np.exp(scene.scales[k:k + BLOCK].astype(np.float64))[:, None, :]).sum(-1)
    return out


def _round(value: float) -> float:
    return float(f"{value:.7g}")


def _bound(lo: np.ndarray, hi: np.ndarray) -> dict[str, list[float]]:
    return {"min": [_round(v) for v in lo], "max": [_round(v) for v in hi]}


def partition(levels: list[GaussianScene], options: CompressOptions) -> Layout:
    """The spatial tree and file units for ``levels`` (level 0 first), as splat-transform lays them out."""
    centres = np.concatenate([s.means for s in levels]).astype(np.float64)
    ext = np.concatenate([half_extents(s) for s in levels])
    lo_all, hi_all = centres - ext, centres + ext
    starts = np.cumsum([0] + [s.count for s in levels])
    layout = Layout({}, [], {})
    fill: dict[int, int] = {}  # level -> splats in its open unit

    def leaf(indices: np.ndarray) -> dict[str, Any]:
        layout.leaves += 1
        level_of = np.searchsorted(starts, indices, side="right") - 1
        lods: dict[str, dict[str, int]] = {}
        for level in np.unique(level_of):
            level = int(level)
            local = indices[level_of == level] - starts[level]
            units = layout.units.setdefault(level, [[]])
            name = f"{level}_{len(units) - 1}/{COMPRESS.files.meta}"
            if name not in layout.filenames:
                layout.filenames.append(name)
            offset = fill.get(level, 0)
            lods[str(level)] = {"file": layout.filenames.index(name), "offset": offset, "count": len(local)}
            units[-1].append(local)
            fill[level] = offset + len(local)
            if fill[level] > options.lod_chunk_splats:
                units.append([])
                fill[level] = 0
        return {"bound": _bound(lo_all[indices].min(0), hi_all[indices].max(0)), "lods": lods}

    def build(indices: np.ndarray) -> dict[str, Any]:
        box = centres[indices]
        lo, hi = box.min(0), box.max(0)
        n = len(indices)
        wide = (hi - lo).max() > options.lod_chunk_extent and n > options.lod_chunk_min_splats
        if n <= LEAF_SPLATS or not (n > options.lod_chunk_splats or wide):
            return leaf(indices)
        axis = int((hi - lo).argmax())
        mid = n // 2
        order = np.argpartition(box[:, axis], mid)
        children = [build(indices[order[:mid]]), build(indices[order[mid:]])]
        mins = np.minimum(children[0]["bound"]["min"], children[1]["bound"]["min"])
        maxs = np.maximum(children[0]["bound"]["max"], children[1]["bound"]["max"])
        return {"bound": _bound(mins, maxs), "children": children}

    layout.tree = build(np.arange(len(centres)))
    return layout


def encode_unit(scene: GaussianScene, options: CompressOptions, device: str) -> dict[str, bytes]:
    """One chunk: a SOG of its own (codebooks and SH palette for its splats), splats in the order given."""
    palette = None
    if scene.shN.shape[1] > 0:
        palette = build_palette(scene.shN, target_error=options.sh_palette_error, max_size=options.sh_palette_max,
                                iterations=options.kmeans_iterations, seed=options.seed, device=device)
    return sog.encode_v2(scene, np.arange(scene.count), palette, webp_method=options.webp_effort)


def lod_meta(levels: list[GaussianScene], layout: Layout, options: CompressOptions,
             extra: dict[str, Any] | None) -> dict[str, Any]:
    counts = [s.count for s in levels]
    return {
        "version": VERSION,
        "asset": {"generator": sog.GENERATOR, "chunkGaussians": options.lod_chunk_splats,
                  "chunkExtent": options.lod_chunk_extent, "chunkMinGaussians": options.lod_chunk_min_splats},
        "count": sum(counts),
        "counts": counts,
        "lodLevels": len(levels),
        "lodErrors": False,
        "filenames": layout.filenames,
        "tree": layout.tree,
        **(extra or {}),
    }


def write_streamed(levels: list[GaussianScene], options: CompressOptions, folder: Path, *, device: str = "cpu",
                   extra: dict[str, Any] | None = None, progress: Progress | None = None) -> StreamedResult:
    """Write the streamed SOG of ``levels`` into ``folder``: every chunk, then ``lod-meta.json``."""
    layout = partition(levels, options)
    folder.mkdir(parents=True)
    total, written = 0, 0
    units = sum(1 for level in layout.units.values() for unit in level if unit)
    for level, level_units in sorted(layout.units.items()):
        scene = levels[level]
        for n, leaves in enumerate(level_units):
            if not leaves:
                continue
            order = np.concatenate([part[morton_order(scene.means[part])] for part in leaves])
            files = encode_unit(scene.subset(order), options, device)
            unit_dir = folder / f"{level}_{n}"
            unit_dir.mkdir()
            for name, data in files.items():
                (unit_dir / name).write_bytes(data)
                total += len(data)
            written += 1
            if progress:
                progress(written / units, f"streamed SOG: chunk {written} of {units}")
    meta = json.dumps(lod_meta(levels, layout, options, extra), separators=(",", ":")).encode()
    (folder / COMPRESS.files.lod_meta).write_bytes(meta)
    return StreamedResult([s.count for s in levels], units, layout.leaves, total + len(meta))

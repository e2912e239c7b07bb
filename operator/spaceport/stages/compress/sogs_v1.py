"""SOGS v1 (the seed's layout, still loaded unbundled by the engine): writer and reader.

The textures are square (n = floor(sqrt(N))), so the N - n² lowest-opacity splats are dropped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from spaceport.splats import SH_COEFFS_FOR_DEGREE, GaussianScene
from spaceport.stages.compress import attributes as attr
from spaceport.stages.compress.ordering import morton_order
from spaceport.stages.compress.palette import ShPalette
from spaceport.stages.compress.sog import PALETTE_ROW, _with_alpha, palette_texture
from spaceport.stages.compress.webp import WEBP_METHOD, decode_rgba, encode_rgba, texels

META = "meta.json"
SH0_CLAMP = 3.0
SHN_CLAMP = 6.0
V1_BANDS_BY_WIDTH = {PALETTE_ROW * k: b for b, k in SH_COEFFS_FOR_DEGREE.items() if k}


def _lerp_bytes(v: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    span = np.where(np.asarray(hi) - np.asarray(lo) > 0, np.asarray(hi) - np.asarray(lo), 1.0)
    return np.clip(np.rint((v - lo) / span * 255.0), 0, 255).astype(np.uint8)


def kept_splats(scene: GaussianScene) -> np.ndarray:
    """Indices of the n² highest-opacity splats (n = floor(sqrt(N)))."""
    n = math.isqrt(scene.count)
    return np.sort(np.argsort(-scene.opacities, kind="stable")[: n * n])


def encode_v1(scene: GaussianScene, palette: ShPalette | None, *, ordering: str = "morton", seed: int = 0,
              device: str = "cpu", webp_method: int = WEBP_METHOD) -> dict[str, bytes]:
    keep = kept_splats(scene)
    s = scene.subset(keep)
    side = math.isqrt(s.count)
    if side == 0:
        raise ValueError("SOGS v1 needs at least one splat")
    order = morton_order(s.means)
    if ordering == "plas":
        import torch

        from spaceport.stages.compress.plas import plas_order, sort_features

        order = plas_order(sort_features(s).to(device), torch.from_numpy(order).to(device), side,
                           seed=seed).cpu().numpy()
    s = s.subset(order)
    n = s.count

    def tex(rows: np.ndarray) -> bytes:
        return encode_rgba(rows.reshape(side, side, 4), webp_method)

    low, high, mins, maxs = attr.encode_means(s.means)
    smin, smax = s.scales.min(0), s.scales.max(0)
    dc = np.clip(s.sh0, -SH0_CLAMP, SH0_CLAMP)
    c4 = np.concatenate([dc, s.opacities[:, None]], axis=1).astype(np.float64)
    cmin, cmax = c4.min(0), c4.max(0)
    files = {
        "means_l.webp": tex(_with_alpha(low)),
        "means_u.webp": tex(_with_alpha(high)),
        "scales.webp": tex(_with_alpha(_lerp_bytes(s.scales, smin, smax))),
        "quats.webp": tex(attr.encode_quats(s.quats)),
        "sh0.webp": tex(_lerp_bytes(c4, cmin, cmax)),
    }
    meta: dict[str, Any] = {
        "means": {"shape": [n, 3], "dtype": "float32", "mins": mins, "maxs": maxs,
                  "files": ["means_l.webp", "means_u.webp"]},
        "scales": {"shape": [n, 3], "dtype": "float32", "mins": smin.tolist(), "maxs": smax.tolist(),
                   "files": ["scales.webp"]},
        "quats": {"shape": [n, 4], "dtype": "uint8", "encoding": "quaternion_packed", "files": ["quats.webp"]},
        "sh0": {"shape": [n, 1, 4], "dtype": "float32", "mins": cmin.tolist(), "maxs": cmax.tolist(),
                "files": ["sh0.webp"]},
    }
    if palette is not None and s.shN.shape[1] > 0:
        cent = np.clip(palette.centroids, -SHN_CLAMP, SHN_CLAMP)
        lo, hi = float(cent.min()), float(cent.max())
        labels = palette.labels[keep][order].astype(np.int64)
        label_rgb = np.stack([labels & 0xFF, labels >> 8, np.zeros_like(labels)], 1).astype(np.uint8)
        files["shN_centroids.webp"] = encode_rgba(palette_texture(_lerp_bytes(cent, lo, hi)), webp_method)
        files["shN_labels.webp"] = tex(_with_alpha(label_rgb))
        meta["shN"] = {"shape": list(cent.shape), "dtype": "float32", "mins": lo, "maxs": hi, "quantization": 8,
                       "files": ["shN_centroids.webp", "shN_labels.webp"]}
    files[META] = json.dumps(meta, separators=(",", ":")).encode()
    return files


def decode_v1(files: dict[str, bytes]) -> tuple[GaussianScene, dict[str, Any]]:
    meta = json.loads(files[META])
    if "version" in meta:
        raise ValueError(f"meta.json has version {meta['version']}; SOGS v1 has none")
    n = int(meta["means"]["shape"][0])

    def img(name: str) -> np.ndarray:
        return texels(decode_rgba(files[name]), n)

    ml, mu = (img(f) for f in meta["means"]["files"])
    means = attr.decode_means(ml[:, :3], mu[:, :3], meta["means"]["mins"], meta["means"]["maxs"])

    def lerp(b: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
        lo_, hi_ = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        return (lo_ + (hi_ - lo_) * b.astype(np.float64) / 255.0).astype(np.float32)

    scales = lerp(img(meta["scales"]["files"][0])[:, :3], meta["scales"]["mins"], meta["scales"]["maxs"])
    quats = attr.decode_quats(img(meta["quats"]["files"][0]))
    c4 = lerp(img(meta["sh0"]["files"][0]), meta["sh0"]["mins"], meta["sh0"]["maxs"])
    shn = np.zeros((n, 0, 3), np.float32)
    if "shN" in meta:
        cent = decode_rgba(files[meta["shN"]["files"][0]])
        k = SH_COEFFS_FOR_DEGREE[V1_BANDS_BY_WIDTH[cent.shape[1]]]
        entries = cent.reshape(-1, PALETTE_ROW, k, 4).reshape(-1, k, 4)[..., :3]
        values = lerp(entries, meta["shN"]["mins"], meta["shN"]["maxs"])
        lab = img(meta["shN"]["files"][1])
        shn = values[lab[:, 0].astype(np.int64) | (lab[:, 1].astype(np.int64) << 8)]
    return GaussianScene(means, scales, quats, c4[:, 3].copy(), c4[:, :3].copy(), shn), meta


def read_v1(path: str | Path) -> tuple[GaussianScene, dict[str, Any]]:
    p = Path(path)
    folder = p.parent if p.name == META else p
    meta = json.loads((folder / META).read_text())
    names = [f for key in ("means", "scales", "quats", "sh0", "shN") if key in meta for f in meta[key]["files"]]
    return decode_v1({META: (folder / META).read_bytes(), **{m: (folder / m).read_bytes() for m in names}})

"""SOG v2: writer (bundled ``.sog`` ZIP and unbundled meta.json + WebPs) and reader.

Texels are laid out row-major in the order given; any order decodes (readers take texels as they come).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from spaceport.splats import SH_COEFFS_FOR_DEGREE, SPLAT_MODELS, GaussianScene
from spaceport.stages.compress import attributes as attr
from spaceport.stages.compress.codebook import encode, optimal_codebook
from spaceport.stages.compress.palette import ShPalette, palette_codebook
from spaceport.stages.compress.webp import WEBP_METHOD, decode_rgba, encode_rgba, texels, texture

GENERATOR = "spaceport"
META = "meta.json"
PALETTE_ROW = 64
"""Palette entries per row of the centroid texture (fixed by the readers)."""


def texture_size(n: int) -> tuple[int, int]:
    """(width, height): both multiples of 4, width ≈ sqrt(n)."""
    width = max(4, math.ceil(math.sqrt(max(n, 1)) / 4) * 4)
    height = max(4, math.ceil(n / width / 4) * 4)
    return width, height


def _with_alpha(rgb: np.ndarray, alpha: np.ndarray | int = 255) -> np.ndarray:
    out = np.empty((len(rgb), 4), np.uint8)
    out[:, :3] = rgb
    out[:, 3] = alpha
    return out


def palette_texture(indices: np.ndarray) -> np.ndarray:
    """[P, K, 3] byte indices → [ceil(P/64), 64·K, 4] texture: entry n at ((n%64)·K + j, n//64)."""
    p, k = indices.shape[0], indices.shape[1]
    rows = math.ceil(p / PALETTE_ROW)
    padded = np.zeros((rows * PALETTE_ROW, k, 4), np.uint8)
    padded[:p, :, :3] = indices
    padded[:p, :, 3] = 255
    return padded.reshape(rows, PALETTE_ROW * k, 4)


def codebooks(scene: GaussianScene, palette: ShPalette | None) -> dict[str, np.ndarray]:
    """The 256-entry codebooks (independent of the splat order, so computed once per scene)."""
    out = {"scales": optimal_codebook(scene.scales), "sh0": optimal_codebook(scene.sh0)}
    if palette is not None and scene.shN.shape[1] > 0:
        out["shN"] = palette_codebook(palette)
    return out


def json_floats(values: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32 (smaller meta.json)."""
    return [float(str(v)) for v in np.asarray(values, np.float32)]


def encode_v2(
    scene: GaussianScene,
    order: np.ndarray,
    palette: ShPalette | None,
    *,
    extra: dict[str, Any] | None = None,
    webp_method: int = WEBP_METHOD,
    books: dict[str, np.ndarray] | None = None,
) -> dict[str, bytes]:
    """All files of a SOG v2 scene (meta.json last), splats laid out in ``order``."""
    books = books or codebooks(scene, palette)
    s = scene.subset(order)
    n = s.count
    width, height = texture_size(n)

    def tex(rows: np.ndarray) -> bytes:
        return encode_rgba(texture(rows, width, height), webp_method)

    low, high, mins, maxs = attr.encode_means(s.means)
    scale_cb, colour_cb = books["scales"], books["sh0"]
    alpha = np.clip(np.rint(attr.sigmoid(s.opacities) * 255.0), 0, 255).astype(np.uint8)
    files = {
        "means_l.webp": tex(_with_alpha(low)),
        "means_u.webp": tex(_with_alpha(high)),
        "scales.webp": tex(_with_alpha(encode(scale_cb, s.scales))),
        "quats.webp": tex(attr.encode_quats(s.quats)),
        "sh0.webp": tex(_with_alpha(encode(colour_cb, s.sh0), alpha)),
    }
    meta: dict[str, Any] = {
        "version": 2,
        "asset": {"generator": GENERATOR},
        "count": n,
        # the rendering model the splats were trained for; omitted for classic 3DGS, as splat-transform does
        **({} if s.model == "default" else {"model": s.model}),
        "means": {"mins": mins, "maxs": maxs, "files": ["means_l.webp", "means_u.webp"]},
        "scales": {"codebook": json_floats(scale_cb), "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": json_floats(colour_cb), "files": ["sh0.webp"]},
    }
    if palette is not None and s.shN.shape[1] > 0:
        sh_cb = books["shN"]
        labels = palette.labels[order].astype(np.int64)
        label_rgb = np.stack([labels & 0xFF, labels >> 8, np.zeros_like(labels)], 1).astype(np.uint8)
        files["shN_centroids.webp"] = encode_rgba(palette_texture(encode(sh_cb, palette.centroids)), webp_method)
        files["shN_labels.webp"] = tex(_with_alpha(label_rgb))
        bands = {v: k for k, v in SH_COEFFS_FOR_DEGREE.items()}[s.shN.shape[1]]
        meta["shN"] = {"count": palette.size, "bands": bands, "codebook": json_floats(sh_cb),
                       "files": ["shN_centroids.webp", "shN_labels.webp"]}
    if extra:
        meta.update(extra)
    files[META] = json.dumps(meta, separators=(",", ":")).encode()
    return files


def bundle(files: dict[str, bytes]) -> bytes:
    """The ``.sog`` ZIP: stored (WebP is already compressed), files at the root, meta.json last."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for name in [*sorted(k for k in files if k != META), META]:
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), files[name])
    return out.getvalue()


def load_files(path: str | Path) -> dict[str, bytes]:
    """Files of a ``.sog`` bundle, or of the folder holding an unbundled ``meta.json``."""
    p = Path(path)
    if p.suffix == ".sog":
        with zipfile.ZipFile(p) as z:
            return {name: z.read(name) for name in z.namelist()}
    folder = p.parent if p.name == META else p
    meta = json.loads((folder / META).read_text())
    names = [f for key in ("means", "scales", "quats", "sh0", "shN") if key in meta for f in meta[key]["files"]]
    return {META: (folder / META).read_bytes(), **{name: (folder / name).read_bytes() for name in names}}


def decode_v2(files: dict[str, bytes]) -> tuple[GaussianScene, dict[str, Any]]:
    """Decode SOG v2 files to a scene (in texel order) and its meta.json."""
    meta = json.loads(files[META])
    if meta.get("version") != 2:
        raise ValueError(f"meta.json version {meta.get('version')!r}; this reader handles SOG v2")
    n = int(meta["count"])

    def img(name: str) -> np.ndarray:
        return texels(decode_rgba(files[name]), n)

    ml, mu = (img(f) for f in meta["means"]["files"])
    means = attr.decode_means(ml[:, :3], mu[:, :3], meta["means"]["mins"], meta["means"]["maxs"])
    scales = np.asarray(meta["scales"]["codebook"], np.float32)[img(meta["scales"]["files"][0])[:, :3]]
    quats = attr.decode_quats(img(meta["quats"]["files"][0]))
    sh0_tex = img(meta["sh0"]["files"][0])
    sh0 = np.asarray(meta["sh0"]["codebook"], np.float32)[sh0_tex[:, :3]]
    opacities = attr.logit(sh0_tex[:, 3] / 255.0).astype(np.float32)
    shn = np.zeros((n, 0, 3), np.float32)
    if "shN" in meta:
        k = SH_COEFFS_FOR_DEGREE[int(meta["shN"]["bands"])]
        cent = decode_rgba(files[meta["shN"]["files"][0]])  # [rows, 64·K, 4]
        entries = cent.reshape(-1, PALETTE_ROW, k, 4).reshape(-1, k, 4)[: int(meta["shN"]["count"]), :, :3]
        values = np.asarray(meta["shN"]["codebook"], np.float32)[entries]  # [P, K, 3]
        lab = img(meta["shN"]["files"][1])
        shn = values[lab[:, 0].astype(np.int64) | (lab[:, 1].astype(np.int64) << 8)]
    model = meta.get("model", "default")
    model = model if model in SPLAT_MODELS else "default"  # e.g. '2dgs': not a model this code renders
    return GaussianScene(means, scales, quats, opacities.astype(np.float32), sh0, shn, model), meta


def read_v2(path: str | Path) -> tuple[GaussianScene, dict[str, Any]]:
    return decode_v2(load_files(path))

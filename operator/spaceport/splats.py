"""A Gaussian-splat scene in memory, and the standard 3DGS ``.ply`` reader and writer.

Conventions (as in the reference 3DGS implementation and gsplat): positions in world units, scales
as natural logs, opacities as logits, rotations as (w, x, y, z) quaternions, colour as SH coefficients
(``sh0`` the DC term, ``shN`` the higher bands, ``[N, K, 3]``). In the PLY, ``f_rest_*`` is stored
channel-major: all K coefficients of red, then green, then blue.

A scene also says which rendering model it was trained for (``model``): ``default`` (classic 3DGS) or
``antialiased`` (Mip-Splatting's 2D filter, gsplat's antialiased mode). The PLY carries it as the header
comment ``SplatRenderMode: mip`` (Brush's form, which splat-transform reads), the SOG as meta.json ``model``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SH_COEFFS_FOR_DEGREE = {0: 0, 1: 3, 2: 8, 3: 15}
"""Number of non-DC SH coefficients per colour channel for each degree."""

REQUIRED_FIELDS = (
    ["x", "y", "z"]
    + [f"f_dc_{i}" for i in range(3)]
    + ["opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)


SPLAT_MODELS = ("default", "antialiased")
"""Rendering models a scene can be trained for (splat-transform's names)."""
_PLY_MODE = {"default": "default", "antialiased": "mip"}
_MODE_COMMENT = "splatrendermode:"


class PlyFormatError(ValueError):
    """The file is not a 3DGS PLY; the message names the missing field or the problem."""


@dataclass
class GaussianScene:
    means: np.ndarray  # [N, 3] float32
    scales: np.ndarray  # [N, 3] float32, log
    quats: np.ndarray  # [N, 4] float32, (w, x, y, z)
    opacities: np.ndarray  # [N] float32, logit
    sh0: np.ndarray  # [N, 3] float32
    shN: np.ndarray  # [N, K, 3] float32, K in {0, 3, 8, 15}
    model: str = "default"  # one of SPLAT_MODELS

    def __post_init__(self) -> None:
        if self.model not in SPLAT_MODELS:
            raise ValueError(f"model {self.model!r}; expected one of {', '.join(SPLAT_MODELS)}")
        n = len(self.means)
        for name in ("scales", "quats", "opacities", "sh0", "shN"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, means has {n}")
        if self.shN.ndim != 3 or self.shN.shape[1] not in SH_COEFFS_FOR_DEGREE.values():
            raise ValueError(f"shN must be [N, K, 3] with K in 0/3/8/15, got {self.shN.shape}")

    @property
    def count(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return {v: k for k, v in SH_COEFFS_FOR_DEGREE.items()}[self.shN.shape[1]]

    def subset(self, mask_or_index: np.ndarray) -> GaussianScene:
        return GaussianScene(
            self.means[mask_or_index],
            self.scales[mask_or_index],
            self.quats[mask_or_index],
            self.opacities[mask_or_index],
            self.sh0[mask_or_index],
            self.shN[mask_or_index],
            self.model,
        )

    def finite_mask(self) -> np.ndarray:
        """Rows whose every attribute is finite."""
        parts = [self.means, self.scales, self.quats, self.opacities[:, None], self.sh0,
                 self.shN.reshape(self.count, 3 * self.shN.shape[1])]
        return np.all(np.isfinite(np.concatenate(parts, axis=1)), axis=1)


def concat(*scenes: GaussianScene) -> GaussianScene:
    """One scene of all the splats of ``scenes`` (same SH degree and model)."""
    if len({s.model for s in scenes}) > 1 or len({s.sh_degree for s in scenes}) > 1:
        raise ValueError("scenes of different SH degrees or rendering models cannot be joined")
    return GaussianScene(*(np.concatenate([getattr(s, f) for s in scenes]) for f in
                           ("means", "scales", "quats", "opacities", "sh0", "shN")), scenes[0].model)


def ply_bytes(scene: GaussianScene) -> bytes:
    """Serialise as a binary little-endian 3DGS PLY."""
    n, k = scene.count, scene.shN.shape[1]
    names = (
        ["x", "y", "z", "nx", "ny", "nz"]
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(3 * k)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )
    cols = np.concatenate(
        [
            scene.means,
            np.zeros((n, 3), np.float32),
            scene.sh0,
            scene.shN.transpose(0, 2, 1).reshape(n, 3 * k),  # channel-major
            scene.opacities[:, None],
            scene.scales,
            scene.quats,
        ],
        axis=1,
    ).astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n"
    if scene.model != "default":
        header += f"comment SplatRenderMode: {_PLY_MODE[scene.model]}\n"
    header += f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    return header.encode("ascii") + np.ascontiguousarray(cols).tobytes()


def write_ply(scene: GaussianScene, path: str | Path) -> None:
    Path(path).write_bytes(ply_bytes(scene))


def read_ply(source: str | Path | bytes, *, name: str = "") -> GaussianScene:
    """Read a 3DGS PLY (binary or ASCII) from a path or bytes."""
    from plyfile import PlyData

    label = name or (str(source) if not isinstance(source, bytes) else "PLY")
    try:
        data = PlyData.read(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except Exception as e:
        raise PlyFormatError(f"{label}: not a readable PLY file ({e})") from e
    if "vertex" not in [el.name for el in data.elements]:
        raise PlyFormatError(f"{label}: no 'vertex' element; not a point or splat PLY")
    vertex = data["vertex"].data
    fields = set(vertex.dtype.names or ())
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise PlyFormatError(f"{label}: not a 3DGS scene, missing vertex field(s) {', '.join(missing)}")
    rest = sorted((f for f in fields if f.startswith("f_rest_")), key=lambda f: int(f.split("_")[-1]))
    if len(rest) % 3 or len(rest) // 3 not in SH_COEFFS_FOR_DEGREE.values():
        raise PlyFormatError(f"{label}: {len(rest)} f_rest fields; expected 0, 9, 24 or 45")

    def cols(names: list[str]) -> np.ndarray:
        return np.stack([np.asarray(vertex[c], dtype=np.float32) for c in names], axis=1)

    n, k = len(vertex), len(rest) // 3
    shn = cols(rest).reshape(n, 3, k).transpose(0, 2, 1) if k else np.zeros((n, 0, 3), np.float32)
    return GaussianScene(
        means=cols(["x", "y", "z"]),
        scales=cols([f"scale_{i}" for i in range(3)]),
        quats=cols([f"rot_{i}" for i in range(4)]),
        opacities=np.asarray(vertex["opacity"], dtype=np.float32),
        sh0=cols([f"f_dc_{i}" for i in range(3)]),
        shN=np.ascontiguousarray(shn),
        model=model_from_comments(data.comments),
    )


def model_from_comments(comments: list[str]) -> str:
    """The rendering model named by a PLY header's ``SplatRenderMode:`` comment (the last one wins, as
    in splat-transform); ``default`` without one or with a mode this code does not render."""
    model = "default"
    for comment in comments:
        text = comment.strip().lower()
        if text.startswith(_MODE_COMMENT):
            mode = text[len(_MODE_COMMENT):].strip()
            model = {v: k for k, v in _PLY_MODE.items()}.get(mode, model)
    return model

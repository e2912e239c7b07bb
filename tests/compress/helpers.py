"""Shared helpers of the compression tests: an independent decoder (splat-transform) and splat matching."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from spaceport.splats import GaussianScene, read_ply, write_ply
from spaceport.stages.compress import attributes as attr
from spaceport.stages.compress.synthetic import orbit_cameras_json, synthetic_scene

ROOT = Path(__file__).resolve().parents[2]
SPLAT_TRANSFORM = ROOT / "node_modules" / ".bin" / "splat-transform"
GEOREF = {"latitude": 47.3769, "longitude": 8.5417, "altitude": 408.0, "frame": "ENU"}


def splat_transform_decode(source: Path, tmp: Path) -> GaussianScene:
    """Decode a .sog / meta.json with @playcanvas/splat-transform (CPU) into a PLY, then read it."""
    if not SPLAT_TRANSFORM.exists():
        raise FileNotFoundError(f"{SPLAT_TRANSFORM} missing: run `npm install` in the repository root")
    out = tmp / f"decoded-{source.parent.name}-{source.name}.ply"
    proc = subprocess.run([str(SPLAT_TRANSFORM), "-g", "cpu", "-q", "-w", str(source), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"splat-transform failed on {source}: {proc.stdout}\n{proc.stderr}"
    return read_ply(out)


def match(decoded: GaussianScene, original: GaussianScene) -> np.ndarray:
    """For each decoded splat, the index of the original it came from (nearest position; must be unique)."""
    _, idx = cKDTree(original.means.astype(np.float64)).query(decoded.means.astype(np.float64))
    assert len(np.unique(idx)) == len(idx), "two decoded splats matched the same original"
    return idx


def write_train_output(folder: Path, scene: GaussianScene, *, cameras: int = 3, georef: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_ply(scene, folder / "splats.ply")
    if cameras:
        (folder / "cameras.json").write_text(orbit_cameras_json(cameras, width=64, height=48))
    if georef:
        (folder / "georef.json").write_text(json.dumps(GEOREF))
    return folder


def small_scene(n: int = 3000, sh_degree: int = 3, seed: int = 1) -> GaussianScene:
    return synthetic_scene(n, sh_degree, seed)


def nearest_entry_error(codebook: list[float], original: np.ndarray, decoded: np.ndarray) -> float:
    """How far decoded values are from the best the codebook allows (0 when each is the nearest entry)."""
    cb = np.asarray(codebook, np.float64)
    best = np.abs(original.astype(np.float64)[..., None] - cb).min(-1)
    return float((np.abs(decoded.astype(np.float64) - original) - best).max())


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    dot = np.clip(np.abs((a * b).sum(1)), 0, 1)
    return np.degrees(2 * np.arccos(dot))


def check_decoded_sog(decoded: GaussianScene, encoded: GaussianScene, meta: dict) -> np.ndarray:
    """A decoded SOG (or streamed chunk) against the splats encoded into it, within the codec's bounds given its
    ``meta.json``; returns the rows of ``encoded`` the decoded splats matched."""
    idx = match(decoded, encoded)
    ref = encoded.subset(idx)
    step = (np.asarray(meta["means"]["maxs"]) - np.asarray(meta["means"]["mins"])) / 65535
    t_err = np.abs(attr.log_transform(decoded.means.astype(np.float64)) - attr.log_transform(ref.means))
    assert np.all(t_err <= step / 2 + 1e-5 * (1 + np.abs(attr.log_transform(ref.means))))
    # codebook attributes: each value decodes to the codebook entry nearest to it
    assert nearest_entry_error(meta["scales"]["codebook"], ref.scales, decoded.scales) < 1e-5
    assert nearest_entry_error(meta["sh0"]["codebook"], ref.sh0, decoded.sh0) < 1e-5
    assert np.abs(attr.sigmoid(decoded.opacities) - attr.sigmoid(ref.opacities)).max() <= 0.5 / 255 + 1e-5
    assert rotation_angle_deg(ref.quats, decoded.quats).max() < 1.2
    # SH: the palette's error plus the 8-bit codebook over its entries
    spread = np.sqrt(((ref.shN - ref.shN.mean(0)) ** 2).sum() / ref.count)
    rmse = np.sqrt(((decoded.shN - ref.shN) ** 2).sum() / ref.count)
    assert rmse / spread < 0.35
    return idx

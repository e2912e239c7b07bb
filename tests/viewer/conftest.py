"""A small, structured splat scene as .ply and as a .sog written by PlayCanvas's own splat-transform."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from spaceport.splats import GaussianScene, write_ply

REPO = Path(__file__).resolve().parents[2]
SPLAT_TRANSFORM = REPO / "node_modules" / ".bin" / "splat-transform"
SH_C0 = 0.28209479177387814


def pattern_scene(n: int = 4000, seed: int = 0) -> GaussianScene:
    """Gaussians on the z=0 plane in [-1, 1]^2, coloured by quadrant and by rings: every part of the
    image differs, so a mirrored, shifted or mis-scaled view scores badly against the right one."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-1, 1, (n, 2))
    means = np.c_[xy, rng.normal(0, 0.02, n)].astype(np.float32)
    r = np.hypot(xy[:, 0], xy[:, 1])
    colour = np.stack([(xy[:, 0] > 0), (xy[:, 1] > 0), (np.sin(r * 12) > 0)], 1) * 0.9 + 0.05
    return GaussianScene(
        means=means,
        scales=np.full((n, 3), np.log(0.03), np.float32),
        quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        opacities=np.full(n, 3.0, np.float32),
        sh0=((colour - 0.5) / SH_C0).astype(np.float32),
        shN=np.zeros((n, 0, 3), np.float32),
    )


@pytest.fixture(scope="session")
def scene_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"ply": scene.ply, "sog": scene.sog, "meta": unbundled meta.json} of :func:`pattern_scene`."""
    if not SPLAT_TRANSFORM.exists() or shutil.which("node") is None:
        pytest.skip("needs node and `npm ci` (splat-transform writes the reference .sog)")
    d = tmp_path_factory.mktemp("scene")
    write_ply(pattern_scene(), d / "scene.ply")
    subprocess.run([str(SPLAT_TRANSFORM), "-g", "cpu", str(d / "scene.ply"), str(d / "scene.sog")],
                   check=True, capture_output=True, timeout=120)
    unbundled = d / "unbundled"
    unbundled.mkdir()
    import zipfile

    with zipfile.ZipFile(d / "scene.sog") as z:
        z.extractall(unbundled)
    return {"ply": d / "scene.ply", "sog": d / "scene.sog", "meta": unbundled / "meta.json"}

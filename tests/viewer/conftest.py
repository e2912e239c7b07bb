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


SURVEY_EAST, SURVEY_NORTH = 60.0, 40.0
"""Size in metres of the generated survey area, centred on the east-north-up origin."""
FIELD_COLOURS = {"NE": (0.85, 0.72, 0.25), "NW": (0.2, 0.55, 0.18), "SE": (0.55, 0.33, 0.18), "SW": (0.6, 0.85, 0.4)}
"""The four fields, one per quadrant: a view of the whole survey shows all four."""
ROAD_COLOUR = (0.45, 0.45, 0.47)


def survey_scene(n: int = 24_000, seed: int = 0) -> GaussianScene:
    """A georeferenced survey seen from a drone: four striped fields on flat ground (z = 0, east-north-up)
    split by two roads, and nothing around them (the viewer's black background)."""
    rng = np.random.default_rng(seed)
    east = rng.uniform(-SURVEY_EAST / 2, SURVEY_EAST / 2, n)
    north = rng.uniform(-SURVEY_NORTH / 2, SURVEY_NORTH / 2, n)
    quadrant = np.where(north >= 0, "N", "S").astype(object) + np.where(east >= 0, "E", "W").astype(object)
    colour = np.array([FIELD_COLOURS[q] for q in quadrant])
    colour *= (1 + 0.18 * np.sign(np.sin(east * np.pi / 2)))[:, None]  # furrows every 2 m
    road = (np.abs(east) < 1.5) | (np.abs(north) < 1.5)
    colour[road] = ROAD_COLOUR
    means = np.c_[east, north, rng.normal(0, 0.03, n)].astype(np.float32)
    scales = np.tile(np.log([0.3, 0.3, 0.03]), (n, 1)).astype(np.float32)  # flat discs lying on the ground
    return GaussianScene(
        means=means,
        scales=scales,
        quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        opacities=np.full(n, 4.0, np.float32),
        sh0=((np.clip(colour, 0, 1) - 0.5) / SH_C0).astype(np.float32),
        shN=np.zeros((n, 0, 3), np.float32),
    )


@pytest.fixture(scope="session")
def survey_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"ply": survey.ply, "sog": survey.sog} of :func:`survey_scene`, the .sog written by splat-transform."""
    if not SPLAT_TRANSFORM.exists() or shutil.which("node") is None:
        pytest.skip("needs node and `npm ci` (splat-transform writes the .sog)")
    d = tmp_path_factory.mktemp("survey")
    write_ply(survey_scene(), d / "survey.ply")
    subprocess.run([str(SPLAT_TRANSFORM), "-g", "cpu", str(d / "survey.ply"), str(d / "scene.sog")],
                   check=True, capture_output=True, timeout=180)
    return {"ply": d / "survey.ply", "sog": d / "scene.sog"}

"""The synthetic flight generator: EXIF, ground truth and determinism (no SfM here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spaceport.synthetic import CAMERA_MAKE, Flight, generate_flight, geodetic_to_enu


def _gps(path: Path) -> tuple[float, float, float]:
    gps = Image.open(path).getexif().get_ifd(0x8825)
    lat = sum(float(v) / 60**i for i, v in enumerate(gps[2])) * (1 if gps[1] == "N" else -1)
    lon = sum(float(v) / 60**i for i, v in enumerate(gps[4])) * (1 if gps[3] == "E" else -1)
    return lat, lon, float(gps[6]) * (-1 if gps[5] == b"\x01" else 1)


def test_gps_exif_matches_ground_truth(tmp_path: Path) -> None:
    flight = generate_flight(tmp_path, n_images=4, width=96, height=72, seed=5, write_truth=True)
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == flight.image_names
    tagged = np.array([_gps(tmp_path / n) for n in flight.image_names])
    enu = geodetic_to_enu(tagged[:, 0], tagged[:, 1], tagged[:, 2], flight.origin)
    np.testing.assert_allclose(enu, flight.camera_centers, atol=0.01)
    exif = Image.open(tmp_path / flight.image_names[0]).getexif()
    assert exif[0x010F] == CAMERA_MAKE
    sub = exif.get_ifd(0x8769)
    # The 35 mm equivalent follows the diagonal convention, and sets the true focal length.
    assert sub[0xA405] / 43.267 * np.hypot(96, 72) == pytest.approx(flight.fx, rel=1e-3)
    loaded = Flight.load(tmp_path / "flight.json")
    np.testing.assert_allclose(loaded.world_to_camera, flight.world_to_camera)
    assert Image.open(tmp_path / flight.image_names[0]).size == (96, 72)


def test_cameras_look_down_at_the_scene(tmp_path: Path) -> None:
    for path in ("lawnmower", "orbit"):
        flight = generate_flight(tmp_path / path, n_images=6, width=64, height=48, seed=1, path=path)
        optical_axes = flight.world_to_camera[:, 2, :3]  # third row of R: the viewing direction in world
        assert np.all(optical_axes[:, 2] < -0.5)
        np.testing.assert_allclose(np.linalg.det(flight.world_to_camera[:, :3, :3]), 1.0, atol=1e-9)
        assert np.all(flight.camera_centers[:, 2] == pytest.approx(30.0))
        pixels = np.asarray(Image.open(tmp_path / path / flight.image_names[0]), np.float32)
        assert pixels.std() > 10  # textured, not a flat colour


def test_same_seed_same_pixels_other_seed_other_scene(tmp_path: Path) -> None:
    a = generate_flight(tmp_path / "a", n_images=2, width=80, height=60, seed=9, gps=False)
    for folder, seed in (("b", 9), ("c", 10)):
        generate_flight(tmp_path / folder, n_images=2, width=80, height=60, seed=seed, gps=False)
    name = a.image_names[1]
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert 0x8825 not in Image.open(tmp_path / "a" / name).getexif()

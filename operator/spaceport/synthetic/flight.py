"""Synthetic drone flights: camera paths, rendering, JPEGs with GPS EXIF and the ground truth."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from spaceport.synthetic.geo import enu_to_geodetic
from spaceport.synthetic.render import render
from spaceport.synthetic.scene import make_scene

FlightPath = Literal["lawnmower", "orbit"]

DEFAULT_ORIGIN = (47.3769, 8.5417, 420.0)
"""Latitude, longitude (degrees) and altitude (metres) of the scene's ENU origin."""
SENSOR_DIAGONAL_MM = 15.86
"""A 1-inch sensor, as on many survey drones: sets the EXIF focal length in mm."""
FULL_FRAME_DIAGONAL_MM = 43.267
"""35 mm equivalents scale by the diagonal (the crop factor), as COLMAP and camera makers read them."""
CAMERA_MAKE, CAMERA_MODEL = "Spaceport", "SynthCam S1"

PRESETS: dict[str, dict] = {
    # What the demo trains on (downscaled to ~320x240 for training).
    "demo": {"n_images": 40, "width": 480, "height": 360, "seed": 7, "path": "lawnmower"},
    # Small and quick: what tests reconstruct.
    "test": {"n_images": 16, "width": 320, "height": 240, "seed": 3, "path": "lawnmower"},
    # The SfM benchmark's flight.
    "bench": {"n_images": 60, "width": 480, "height": 360, "seed": 11, "path": "lawnmower"},
}


@dataclass
class Flight:
    """What was generated: image files and their ground truth in the local ENU frame (metres)."""

    out_dir: Path
    image_names: list[str]
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray  # [N, 4, 4] OpenCV convention (x right, y down, z forward)
    origin: tuple[float, float, float]  # lat, lon, alt of the ENU origin
    path: str
    seed: int
    gps: bool
    render_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]])

    @property
    def camera_centers(self) -> np.ndarray:
        """[N, 3] camera centres in ENU metres."""
        r, t = self.world_to_camera[:, :3, :3], self.world_to_camera[:, :3, 3]
        return -np.einsum("nji,nj->ni", r, t)

    @property
    def extent(self) -> float:
        """Diagonal of the bounding box of the camera centres, in metres."""
        c = self.camera_centers
        return float(np.linalg.norm(c.max(0) - c.min(0)))

    def to_json(self) -> str:
        return json.dumps({
            "images": self.image_names, "width": self.width, "height": self.height,
            "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
            "worldToCamera": self.world_to_camera.tolist(), "origin": list(self.origin),
            "path": self.path, "seed": self.seed, "gps": self.gps,
        }, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> Flight:
        """Read ``flight.json`` (written by :func:`generate_flight` with ``write_truth=True``)."""
        d = json.loads(Path(path).read_text())
        return cls(Path(path).parent, d["images"], d["width"], d["height"], d["fx"], d["fy"], d["cx"], d["cy"],
                   np.array(d["worldToCamera"]), tuple(d["origin"]), d["path"], d["seed"], d["gps"])


def look_at(centre: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """World-to-camera 4x4 for a camera at ``centre`` looking along ``forward`` with the world z axis up."""
    f = forward / np.linalg.norm(forward)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    r = np.stack([right, down, f])  # rows: camera axes in world coordinates
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, -r @ centre
    return m


def lawnmower_poses(n: int, altitude: float, footprint: tuple[float, float], *, overlap: float = 0.8,
                    sidelap: float = 0.65, tilt_deg: float = 20.0) -> np.ndarray:
    """Back-and-forth strips along x with 80% forward and 65% side overlap, as survey apps plan them.

    The camera leans forward by ``tilt_deg`` (and turns round with the drone at the end of each strip).
    """
    strips = max(2, round(np.sqrt(n / 4)))
    counts = [n // strips + (1 if s < n % strips else 0) for s in range(strips)]
    step = footprint[1] * (1 - overlap)
    spacing = footprint[0] * (1 - sidelap)
    poses = []
    for s, count in enumerate(counts):
        y = (s - (strips - 1) / 2) * spacing
        length = (max(counts) - 1) * step
        xs = np.linspace(-length / 2, length / 2, count)
        heading = 1.0 if s % 2 == 0 else -1.0
        if heading < 0:
            xs = xs[::-1]
        tilt = np.radians(tilt_deg)
        forward = np.array([heading * np.sin(tilt), 0.0, -np.cos(tilt)])
        poses.extend(look_at(np.array([x, y, altitude]), forward) for x in xs)
    return np.stack(poses)


def orbit_poses(n: int, altitude: float, radius: float) -> np.ndarray:
    """A circle around the origin, every camera looking at the ground centre."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    centres = np.stack([radius * np.cos(angles), radius * np.sin(angles), np.full(n, altitude)], -1)
    return np.stack([look_at(c, -c) for c in centres])


def _ground_reach(poses: np.ndarray, k: np.ndarray, width: int, height: int, cap: float) -> float:
    """Largest |x| or |y| where any image corner's ray meets the ground (capped for near-horizon rays)."""
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], float)
    rays_cam = corners @ np.linalg.inv(k).T
    reach = 0.0
    for m in poses:
        r_wc = m[:3, :3].T
        c = -r_wc @ m[:3, 3]
        d = rays_cam @ r_wc.T
        t = np.where(d[:, 2] < -1e-6, -c[2] / np.minimum(d[:, 2], -1e-6), np.inf)
        pts = c[:2] + d[:, :2] * np.minimum(t, cap)[:, None]
        reach = max(reach, float(np.abs(pts).max()))
    return min(reach, cap)


def _exif(i: int, enu: np.ndarray, origin: tuple[float, float, float], focal_mm: float, focal_35: int,
          gps: bool, start: datetime) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = CAMERA_MAKE, CAMERA_MODEL
    exif[0x0112] = 1  # orientation: as stored
    exif[0x0132] = (start + timedelta(seconds=2 * i)).strftime("%Y:%m:%d %H:%M:%S")
    sub = exif.get_ifd(0x8769)
    sub[0x920A] = round(focal_mm, 3)  # FocalLength
    sub[0xA405] = focal_35  # FocalLengthIn35mmFilm
    sub[0x9003] = exif[0x0132]  # DateTimeOriginal
    if gps:
        lat, lon, alt = (float(v) for v in enu_to_geodetic(enu, origin))
        g = exif.get_ifd(0x8825)
        g[0x0000] = b"\x02\x03\x00\x00"
        g[0x0001], g[0x0002] = ("N" if lat >= 0 else "S"), _dms(abs(lat))
        g[0x0003], g[0x0004] = ("E" if lon >= 0 else "W"), _dms(abs(lon))
        g[0x0005], g[0x0006] = (b"\x00" if alt >= 0 else b"\x01"), round(abs(alt), 3)
    return exif


def _dms(deg: float) -> tuple[float, float, float]:
    d = int(deg)
    m = int((deg - d) * 60)
    s = (deg - d - m / 60) * 3600
    return float(d), float(m), round(s, 4)  # 1e-4 arc seconds is ~3 mm


def generate_flight(
    out_dir: str | Path,
    *,
    preset: str | None = None,
    n_images: int = 16,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
    path: FlightPath = "lawnmower",
    gps: bool = True,
    altitude: float = 30.0,
    focal_35mm: int = 24,
    origin: tuple[float, float, float] = DEFAULT_ORIGIN,
    gps_noise_m: float = 0.0,
    name_format: str = "IMG_{:04d}.jpg",
    jpeg_quality: int = 93,
    write_truth: bool = False,
) -> Flight:
    """Render a flight over a procedural village into ``out_dir`` as JPEGs (with GPS EXIF if ``gps``).

    ``preset`` ("demo", "test", "bench") fills n_images, size, seed and path. The focal length is
    exact in the EXIF (35 mm equivalent); ``gps_noise_m`` adds Gaussian noise to the tagged positions
    only, never to the returned truth. ``write_truth`` also writes ``flight.json``.
    """
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; presets are {', '.join(PRESETS)}")
        p = PRESETS[preset]
        n_images, width, height, seed, path = p["n_images"], p["width"], p["height"], p["seed"], p["path"]
    if n_images < 1 or width < 16 or height < 16:
        raise ValueError("need at least one image of at least 16x16 pixels")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fx = focal_35mm / FULL_FRAME_DIAGONAL_MM * float(np.hypot(width, height))
    k = np.array([[fx, 0, width / 2], [0, fx, height / 2], [0, 0, 1]])
    foot = (2 * altitude * width / 2 / fx, 2 * altitude * height / 2 / fx)  # across, along track at nadir
    if path == "lawnmower":
        poses = lawnmower_poses(n_images, altitude, foot)
    elif path == "orbit":
        poses = orbit_poses(n_images, altitude, radius=0.8 * altitude)
    else:
        raise ValueError(f"unknown path {path!r}; use 'lawnmower' or 'orbit'")
    centres = -np.einsum("nji,nj->ni", poses[:, :3, :3], poses[:, :3, 3])
    half = float(np.abs(centres[:, :2]).max()) + 0.35 * min(foot)
    scene = make_scene(seed, half, _ground_reach(poses, k, width, height, cap=300.0) + 5.0)
    rng = np.random.default_rng(seed + 1)
    start = datetime(2026, 6, 1, 10, 0, 0, tzinfo=UTC)
    names = []
    for i, m in enumerate(poses):
        rgb = render(scene, m, k, width, height)
        name = name_format.format(i + 1)
        tagged = centres[i] + (rng.normal(0, gps_noise_m, 3) if gps_noise_m > 0 else 0)
        focal_mm = focal_35mm * SENSOR_DIAGONAL_MM / FULL_FRAME_DIAGONAL_MM
        exif = _exif(i, tagged, origin, focal_mm, focal_35mm, gps, start)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(out / name, "JPEG", quality=jpeg_quality, exif=exif)
        names.append(name)
    flight = Flight(out, names, width, height, fx, fx, width / 2, height / 2, poses, tuple(origin), path, seed, gps,
                    render_seconds=time.perf_counter() - t0)
    if write_truth:
        (out / "flight.json").write_text(flight.to_json())
    return flight

"""A procedural village seen from above: textured fields, roads, buildings and trees, deterministic by seed.

Everything is in a local ENU frame (metres; z up, ground at z = 0). Detail is kept at the
0.3-3 m scale: coarse enough for a Gaussian splat to fit at drone resolutions, rich enough for SIFT.
Shadows are baked into the ground texture so that appearance does not depend on the viewpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

SUN = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])
AMBIENT, DIFFUSE = 0.5, 0.55

FIELD_COLOURS = np.array(
    [[0.42, 0.55, 0.25], [0.55, 0.62, 0.30], [0.68, 0.60, 0.36], [0.50, 0.40, 0.26], [0.33, 0.47, 0.22],
     [0.74, 0.68, 0.42], [0.46, 0.52, 0.33], [0.60, 0.50, 0.32]]
)
ROOF_COLOURS = np.array([[0.62, 0.25, 0.18], [0.45, 0.45, 0.48], [0.30, 0.30, 0.33], [0.70, 0.40, 0.25],
                         [0.50, 0.30, 0.25], [0.35, 0.42, 0.50]])
WALL_COLOURS = np.array([[0.85, 0.80, 0.70], [0.92, 0.90, 0.85], [0.80, 0.68, 0.55], [0.75, 0.75, 0.72],
                         [0.88, 0.78, 0.60]])


@dataclass(frozen=True)
class Building:
    """An oriented box standing on the ground: centre (x, y), half sizes, height, yaw in radians."""

    x: float
    y: float
    half_x: float
    half_y: float
    height: float
    yaw: float
    wall: tuple[float, float, float]
    roof: tuple[float, float, float]

    def corners(self) -> np.ndarray:
        """[8, 3] world corners."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        pts = []
        for z in (0.0, self.height):
            for u, v in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                lx, ly = u * self.half_x, v * self.half_y
                pts.append([self.x + c * lx - s * ly, self.y + s * lx + c * ly, z])
        return np.array(pts)


@dataclass(frozen=True)
class Tree:
    """A spherical crown."""

    x: float
    y: float
    z: float
    radius: float
    colour: tuple[float, float, float]


@dataclass
class Scene:
    buildings: list[Building]
    trees: list[Tree]
    ground: np.ndarray  # [H, W, 3] float32 albedo with shadows baked in; row = y, column = x
    ground_origin: tuple[float, float]  # world (x, y) of texel (0, 0)
    texel: float  # metres per texel
    seed: int

    def sample_ground(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear albedo at world (x, y); outside the texture the edge texels repeat."""
        h, w, _ = self.ground.shape
        inv = np.float32(1 / self.texel)
        u = np.clip((x.astype(np.float32) - np.float32(self.ground_origin[0])) * inv, 0, np.float32(w - 1.001))
        v = np.clip((y.astype(np.float32) - np.float32(self.ground_origin[1])) * inv, 0, np.float32(h - 1.001))
        u0, v0 = u.astype(np.int32), v.astype(np.int32)
        fu, fv = (u - u0)[..., None], (v - v0)[..., None]
        flat = self.ground.reshape(-1, 3)
        i00 = v0 * w + u0
        top = flat[i00] + (flat[i00 + 1] - flat[i00]) * fu
        bottom = flat[i00 + w] + (flat[i00 + w + 1] - flat[i00 + w]) * fu
        return top + (bottom - top) * fv


def _noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth value noise in about -1..1 with features ``cell`` texels wide."""
    gh, gw = int(np.ceil(shape[0] / cell)) + 4, int(np.ceil(shape[1] / cell)) + 4
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    up = ndimage.zoom(grid, cell, order=1)
    return up[: shape[0], : shape[1]]


def _fbm(rng: np.random.Generator, shape: tuple[int, int], cells: list[float], weights: list[float]) -> np.ndarray:
    return sum(w * _noise(rng, shape, max(c, 1.0)) for c, w in zip(cells, weights, strict=True))


def _speckle(rng: np.random.Generator, n: int, texel: float) -> np.ndarray:
    """Soft dark and light blobs (bushes, stones, bare patches) 0.3-1 m across: what SIFT locks onto."""
    out = np.ones((n, n), np.float32)
    for radius, per_m2, strength in ((0.35, 0.35, 0.35), (0.8, 0.06, 0.3)):
        count = int(per_m2 * (n * texel) ** 2)
        deltas = np.zeros((n, n), np.float32)
        deltas[rng.integers(0, n, count), rng.integers(0, n, count)] = rng.choice([-1.0, 1.0], count)
        sigma = radius / texel
        blobs = ndimage.gaussian_filter(deltas, sigma, truncate=3.0) * (2 * np.pi * sigma * sigma)
        out += strength * np.clip(blobs, -1.5, 1.5)
    return np.clip(out, 0.4, 1.6)


def _place(rng: np.random.Generator, half: float, roads: list[tuple[np.ndarray, np.ndarray, float]],
           n_buildings: int, n_trees: int) -> tuple[list[Building], list[Tree]]:
    def road_clear(x: float, y: float, margin: float) -> bool:
        for p, d, width in roads:
            rel = np.array([x, y]) - p
            if abs(rel[0] * d[1] - rel[1] * d[0]) < width / 2 + margin:
                return False
        return True

    buildings: list[Building] = []
    occupied: list[tuple[float, float, float]] = []
    for _ in range(n_buildings * 30):
        if len(buildings) >= n_buildings:
            break
        hx, hy = rng.uniform(2.5, 6.0), rng.uniform(2.5, 5.0)
        x, y = rng.uniform(-half * 0.85, half * 0.85, 2)
        r = float(np.hypot(hx, hy))
        if not road_clear(x, y, r + 1.5) or any(np.hypot(x - ox, y - oy) < r + orad + 2.0 for ox, oy, orad in occupied):
            continue
        # Houses face the nearest road: align yaw with it, with a little jitter.
        d = roads[int(rng.integers(len(roads)))][1]
        yaw = float(np.arctan2(d[1], d[0]) + rng.normal(0, 0.08))
        buildings.append(Building(float(x), float(y), hx, hy, float(rng.uniform(4.0, 12.0)), yaw,
                                  tuple(WALL_COLOURS[rng.integers(len(WALL_COLOURS))]),
                                  tuple(ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))] * rng.uniform(0.9, 1.1))))
        occupied.append((float(x), float(y), r))
    trees: list[Tree] = []
    for _ in range(n_trees * 30):
        if len(trees) >= n_trees:
            break
        x, y = rng.uniform(-half, half, 2)
        rad = float(rng.uniform(1.4, 3.2))
        crowded = any(np.hypot(x - ox, y - oy) < rad + orad + 0.3 for ox, oy, orad in occupied)
        if crowded or not road_clear(x, y, rad + 0.5):
            continue
        green = np.array([0.20, 0.38, 0.14]) * rng.uniform(0.75, 1.3) + rng.uniform(-0.04, 0.04, 3)
        trees.append(Tree(float(x), float(y), float(rad + rng.uniform(1.5, 4.0)), rad, tuple(np.clip(green, 0, 1))))
        occupied.append((float(x), float(y), rad))
    return buildings, trees


def _convex_mask(xs: np.ndarray, ys: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Texels inside the counter-clockwise convex polygon ``poly`` [K, 2]."""
    inside = np.ones(np.broadcast(xs, ys).shape, bool)
    for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        inside &= (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0]) >= 0
    return inside


def _hull(points: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull

    return points[ConvexHull(points).vertices]  # counter-clockwise in 2-D


def make_scene(seed: int, half_extent: float, ground_half_extent: float, *, texel: float = 0.08) -> Scene:
    """A village of about ``(2 * half_extent)^2`` square metres on textured ground.

    The ground texture covers ``ground_half_extent`` (enough for every view's footprint); its texel
    size grows when needed to keep it under ~2500^2 texels.
    """
    rng = np.random.default_rng(seed)
    texel = max(texel, 2 * ground_half_extent / 2500)
    n = int(np.ceil(2 * ground_half_extent / texel))
    x0 = y0 = -n * texel / 2
    coords = x0 + (np.arange(n, dtype=np.float32) + 0.5) * texel
    xs, ys = coords[None, :], coords[:, None]

    # Fields: Voronoi cells with crop rows; hedges where two cells meet.
    n_fields = max(6, int((2 * ground_half_extent) ** 2 / 700))
    seeds = rng.uniform(-ground_half_extent, ground_half_extent, (n_fields, 2))
    warp = _fbm(rng, (n, n), [12 / texel], [3.0])
    pts = np.stack([np.broadcast_to(xs, (n, n)) + warp, np.broadcast_to(ys, (n, n)) - warp], -1).reshape(-1, 2)
    dist, idx = cKDTree(seeds).query(pts, k=2, workers=-1)
    cell = idx[:, 0].reshape(n, n)
    border = (dist[:, 1] - dist[:, 0]).reshape(n, n)
    colour = FIELD_COLOURS[rng.integers(len(FIELD_COLOURS), size=n_fields)] * rng.uniform(0.9, 1.1, (n_fields, 1))
    angle = rng.uniform(0, np.pi, n_fields)
    period = rng.uniform(1.2, 3.0, n_fields)
    amp = rng.uniform(0.0, 0.14, n_fields)
    along = np.cos(angle)[cell] * xs + np.sin(angle)[cell] * ys
    rows = 1 + amp[cell] * np.sin(2 * np.pi * along / period[cell])
    tone = 1 + _fbm(rng, (n, n), [8 / texel, 2.5 / texel, 0.8 / texel], [0.12, 0.07, 0.04])
    ground = colour[cell] * (rows * tone * _speckle(rng, n, texel))[..., None]
    hedge = np.clip(1 - border / 0.9, 0, 1)[..., None]
    ground = ground * (1 - hedge) + np.array([0.18, 0.30, 0.12]) * hedge

    # Two roads crossing near the middle, with dashed centre lines.
    roads = []
    for k in range(2):
        theta = rng.uniform(-0.3, 0.3) + k * np.pi / 2
        d = np.array([np.cos(theta), np.sin(theta)])
        p = rng.uniform(-half_extent * 0.3, half_extent * 0.3, 2)
        roads.append((p, d, float(rng.uniform(4.5, 6.5))))
    asphalt_tone = 1 + _fbm(rng, (n, n), [3 / texel, 0.6 / texel], [0.08, 0.05])
    for p, d, width in roads:
        across = (xs - p[0]) * d[1] - (ys - p[1]) * d[0]
        along = (xs - p[0]) * d[0] + (ys - p[1]) * d[1]
        road = np.clip(width / 2 + 0.2 - np.abs(across), 0, texel * 3)[..., None] / (texel * 3)
        ground = ground * (1 - road) + (np.array([0.36, 0.36, 0.37]) * asphalt_tone[..., None]) * road
        dash = (np.abs(across) < 0.15) & (np.mod(along, 6.0) < 3.0)
        ground[dash] = [0.9, 0.9, 0.85]

    buildings, trees = _place(rng, half_extent, roads, max(3, int((2 * half_extent) ** 2 / 260)),
                              max(8, int((2 * half_extent) ** 2 / 90)))
    shade = np.ones((n, n), np.float32)
    sun_xy = -SUN[:2] / SUN[2]  # ground offset of a shadow per metre of height
    for b in buildings:
        lo = ((b.corners()[:, :2].min(0) - 3.0 - x0) / texel).astype(int).clip(0, n)
        hi = ((b.corners()[:, :2].max(0) + 3.0 - x0) / texel).astype(int).clip(0, n)
        sub = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        plot = _convex_mask(xs[:, sub[1]], ys[sub[0]], _hull(np.concatenate(
            [b.corners()[:4, :2] + off for off in ([-2, -2], [2, -2], [2, 2], [-2, 2])])))
        ground[sub][plot] = np.array([0.62, 0.60, 0.56]) * asphalt_tone[sub][plot][:, None]
    for b in buildings:
        foot = b.corners()[:4, :2]
        poly = _hull(np.concatenate([foot, foot + sun_xy * b.height]))
        lo = ((poly.min(0) - x0) / texel).astype(int).clip(0, n)
        hi = ((poly.max(0) - x0) / texel).astype(int).clip(0, n) + 1
        sub = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        shade[sub][_convex_mask(xs[:, sub[1]], ys[sub[0]], poly)] = 0.55
    for t in trees:
        cx, cy = np.array([t.x, t.y]) + sun_xy * t.z
        r = t.radius * 0.95
        lo = ((np.array([cx, cy]) - r - x0) / texel).astype(int).clip(0, n)
        hi = ((np.array([cx, cy]) + r - x0) / texel).astype(int).clip(0, n) + 1
        sub = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        disc = (xs[:, sub[1]] - cx) ** 2 + (ys[sub[0]] - cy) ** 2 < r * r
        shade[sub][disc] = np.minimum(shade[sub][disc], 0.6)
    shade = ndimage.uniform_filter(shade, 3)  # soft shadow edges
    ground = np.clip(ground * shade[..., None], 0, 1).astype(np.float32)
    return Scene(buildings, trees, ground, (float(x0), float(y0)), float(texel), seed)

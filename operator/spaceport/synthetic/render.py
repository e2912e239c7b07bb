"""CPU ray casting of a :class:`Scene` through a pinhole camera (numpy, vectorised per primitive).

Each primitive is tested only against the rays inside its projected bounding rectangle, so a frame
costs roughly one ground lookup per ray plus a little per visible building or tree.
"""

from __future__ import annotations

import numpy as np

from spaceport.synthetic.scene import AMBIENT, DIFFUSE, SUN, Scene

SKY = np.array([0.70, 0.80, 0.92], np.float32)
HAZE_START_M = 120.0
EPS = 1e-9


def _rect(corners: np.ndarray, w2c: np.ndarray, k: np.ndarray, w: int, h: int) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (x0, x1, y0, y1) that covers the projection of convex ``corners``; None when off screen."""
    cam = corners @ w2c[:3, :3].T + w2c[:3, 3]
    near = 0.05
    front = cam[:, 2] > near
    if not front.any():
        return None
    if not front.all():
        # Clip the convex hull at the near plane: where segments between front and back corners cross it.
        a, b = cam[front][:, None], cam[~front][None]
        s = (near - a[..., 2]) / (b[..., 2] - a[..., 2])
        cam = np.concatenate([cam[front], (a + (b - a) * s[..., None]).reshape(-1, 3)])
    uv = cam[:, :2] / cam[:, 2:] * [k[0, 0], k[1, 1]] + [k[0, 2], k[1, 2]]
    lo, hi = np.clip(uv.min(0), -1e6, 1e6), np.clip(uv.max(0), -1e6, 1e6)
    x0, y0 = np.floor(lo).astype(int) - 1
    x1, y1 = np.ceil(hi).astype(int) + 2
    x0, x1, y0, y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    return None if x0 >= x1 or y0 >= y1 else (x0, x1, y0, y1)


def _tree_texture(normal: np.ndarray, seed: int) -> np.ndarray:
    """Smooth leafy variation over the crown, a function of the surface normal only."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(5, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freq, phase = rng.uniform(4, 9, 5), rng.uniform(0, 2 * np.pi, 5)
    return 0.82 + 0.06 * np.sin((normal @ dirs.T) * freq + phase).sum(-1)


def _building_albedo(b_local: np.ndarray, axis: np.ndarray, wall: np.ndarray, roof: np.ndarray,
                     half: np.ndarray) -> np.ndarray:
    """Albedo of hits on one building given hit points in its local frame and the face axis (0, 1, 2)."""
    out = np.empty(b_local.shape, np.float32)
    is_roof = axis == 2
    # Roof: tile rows across the ridge and a darker rim.
    p = b_local[is_roof]
    rim = (np.abs(p[:, 0]) > half[0] - 0.35) | (np.abs(p[:, 1]) > half[1] - 0.35)
    rows = 1 + 0.07 * np.sin(2 * np.pi * p[:, 0] / 0.9)
    out[is_roof] = roof * (rows * np.where(rim, 0.75, 1.0))[:, None]
    # Walls: storeys of windows.
    p = b_local[~is_roof]
    u = np.where(axis[~is_roof] == 0, p[:, 1], p[:, 0]) + 50.0
    z = p[:, 2]
    window = ((np.mod(z, 3.0) > 1.0) & (np.mod(z, 3.0) < 2.2) & (np.mod(u, 2.6) > 0.8) & (np.mod(u, 2.6) < 1.9))
    out[~is_roof] = np.where(window[:, None], np.array([0.22, 0.27, 0.33], np.float32), wall)
    return out


def render(
    scene: Scene, w2c: np.ndarray, k: np.ndarray, width: int, height: int, *, supersample: int = 2
) -> np.ndarray:
    """[height, width, 3] float32 RGB in 0..1 of ``scene`` seen by a camera (OpenCV convention)."""
    ss = supersample
    w, h = width * ss, height * ss
    kk = k.astype(np.float64).copy()
    kk[:2] *= ss
    kk[0, 2] += (ss - 1) / 2  # keep pixel centres aligned after the box downsample
    kk[1, 2] += (ss - 1) / 2
    r_wc = w2c[:3, :3].T
    origin = -r_wc @ w2c[:3, 3]
    px = ((np.arange(w, dtype=np.float32) - kk[0, 2]) / kk[0, 0]).astype(np.float32)
    py = ((np.arange(h, dtype=np.float32) - kk[1, 2]) / kk[1, 1]).astype(np.float32)
    r32 = r_wc.astype(np.float32)
    # Rays need not be unit length: every t below is in units of the ray, consistently.
    dirs = px[None, :, None] * r32[:, 0] + py[:, None, None] * r32[:, 1] + r32[:, 2]

    dz = dirs[..., 2]
    t_best = np.where(dz < -EPS, np.float32(-origin[2]) / np.minimum(dz, np.float32(-EPS)), np.float32(np.inf))
    ground_light = np.float32(AMBIENT + DIFFUSE * SUN[2])
    longest_ray = float(np.linalg.norm(dirs[[0, 0, -1, -1], [0, -1, 0, -1]], axis=-1).max())
    if np.isfinite(t_best).all() and float(t_best.max()) * longest_ray < HAZE_START_M:
        # The usual drone view: every ray meets the ground nearby, so no sky and no haze. The ground
        # texture is smooth at pixel scale: one lookup per output pixel (the centre sub-sample's
        # neighbourhood) is enough, and lookups are most of a frame's cost.
        d1 = (((np.arange(width, dtype=np.float32) - k[0, 2]) / k[0, 0])[None, :, None] * r32[:, 0]
              + ((np.arange(height, dtype=np.float32) - k[1, 2]) / k[1, 1])[:, None, None] * r32[:, 1] + r32[:, 2])
        t1 = np.float32(-origin[2]) / d1[..., 2]
        ground = scene.sample_ground(origin[0] + d1[..., 0] * t1, origin[1] + d1[..., 1] * t1) * ground_light
        colour = np.repeat(np.repeat(ground, ss, axis=0), ss, axis=1) if ss > 1 else ground
    else:
        colour = np.empty((h, w, 3), np.float32)
        hit = np.isfinite(t_best)
        gp = origin + dirs[hit] * t_best[hit][:, None]
        colour[hit] = scene.sample_ground(gp[:, 0], gp[:, 1]) * ground_light
        # Haze towards the horizon hides where the textured ground ends.
        fog = np.clip((t_best * np.linalg.norm(dirs, axis=-1) - HAZE_START_M) / 250.0, 0, 1)[..., None]
        colour = np.where(hit[..., None], colour * (1 - fog) + SKY * fog, SKY).astype(np.float32)

    for b in scene.buildings:
        rect = _rect(b.corners(), w2c, kk, w, h)
        if rect is None:
            continue
        x0, x1, y0, y1 = rect
        d = dirs[y0:y1, x0:x1].reshape(-1, 3)
        c, s = np.cos(b.yaw), np.sin(b.yaw)
        rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])  # world -> building frame
        o_l = rot @ (origin - [b.x, b.y, b.height / 2])
        d_l = d @ rot.T
        d_safe = np.where(np.abs(d_l) < EPS, EPS, d_l)
        half = np.array([b.half_x, b.half_y, b.height / 2])
        t1, t2 = (-half - o_l) / d_safe, (half - o_l) / d_safe
        t_near, t_far = np.minimum(t1, t2), np.maximum(t1, t2)
        t_in, t_out = t_near.max(1), t_far.min(1)
        region = t_best[y0:y1, x0:x1].reshape(-1)
        ok = (t_in <= t_out) & (t_in > 0) & (t_in < region)
        if not ok.any():
            continue
        axis = t_near[ok].argmax(1)
        normal_l = np.zeros((ok.sum(), 3))
        normal_l[np.arange(len(axis)), axis] = -np.sign(d_l[ok][np.arange(len(axis)), axis])
        albedo = _building_albedo(o_l + d_l[ok] * t_in[ok][:, None], axis, np.array(b.wall, np.float32),
                                  np.array(b.roof, np.float32), half)
        lambert = AMBIENT + DIFFUSE * np.clip(normal_l @ rot @ SUN, 0, 1)
        region[ok] = t_in[ok]
        t_best[y0:y1, x0:x1] = region.reshape(y1 - y0, x1 - x0)
        block = colour[y0:y1, x0:x1].reshape(-1, 3)
        block[ok] = albedo * lambert[:, None]
        colour[y0:y1, x0:x1] = block.reshape(y1 - y0, x1 - x0, 3)

    for i, t in enumerate(scene.trees):
        centre = np.array([t.x, t.y, t.z])
        box = centre + t.radius * np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        rect = _rect(box, w2c, kk, w, h)
        if rect is None:
            continue
        x0, x1, y0, y1 = rect
        d = dirs[y0:y1, x0:x1].reshape(-1, 3)
        oc = origin - centre
        bq = d @ oc.astype(np.float32)
        aq = np.einsum("ij,ij->i", d, d)
        disc = bq * bq - aq * (oc @ oc - t.radius**2)
        t_hit = (-bq - np.sqrt(np.maximum(disc, 0))) / aq
        region = t_best[y0:y1, x0:x1].reshape(-1)
        ok = (disc > 0) & (t_hit > 0) & (t_hit < region)
        if not ok.any():
            continue
        normal = (oc + d[ok] * t_hit[ok][:, None]) / t.radius
        lambert = AMBIENT + DIFFUSE * np.clip(normal @ SUN, 0, 1)
        shade = _tree_texture(normal, scene.seed * 7919 + i) * lambert
        region[ok] = t_hit[ok]
        t_best[y0:y1, x0:x1] = region.reshape(y1 - y0, x1 - x0)
        block = colour[y0:y1, x0:x1].reshape(-1, 3)
        block[ok] = np.array(t.colour, np.float32) * shade[:, None]
        colour[y0:y1, x0:x1] = block.reshape(y1 - y0, x1 - x0, 3)

    out = sum(colour[i::ss, j::ss] for i in range(ss) for j in range(ss)) / np.float32(ss * ss)
    return np.clip(out, 0, 1).astype(np.float32)

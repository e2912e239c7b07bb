"""Light that changes with the viewing direction (the hotspot opposite the sun), learned for the whole scene: the
gain follows the world direction of a ray, not the photo or the pixel; it is learned from training photos and
carries over to a view it never saw; training reports the render through it beside the splats alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spaceport.stages.runner import run_stage
from spaceport.stages.train.light import DirectionalLight
from spaceport.stages.train.render import Camera
from tests.train.fixtures import cameras, look_at, write_sfm_output
from tests.train.test_stage import FAST

ANTI_SUN = np.array([-1.0, -0.27, -0.75]) / np.linalg.norm([-1.0, -0.27, -0.75])
"""The direction sunlight travels in the tests' scenes: views looking along it see the halo at its centre."""
HALO, WIDTH_DEG = 0.5, 15.0


def halo(directions: np.ndarray) -> np.ndarray:
    """The true gain of a ray travelling along ``directions`` ([..., 3], unit): 1.5 at the anti-sun point."""
    angle = np.degrees(np.arccos(np.clip(directions @ ANTI_SUN, -1, 1)))
    return 1 + HALO * np.exp(-0.5 * (angle / WIDTH_DEG) ** 2)


def world_rays(cam: Camera) -> np.ndarray:
    """``[H, W, 3]`` unit world directions of ``cam``'s pixel centres."""
    ys, xs = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    rays = np.stack([(xs - cam.cx) / cam.fx, (ys - cam.cy) / cam.fy, np.ones_like(xs)], -1)
    rays = rays @ cam.world_to_camera[:3, :3]
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def test_the_gain_follows_the_world_direction_of_a_ray_whatever_the_camera() -> None:
    light = DirectionalLight(lr=1e-3, device="cpu")
    with torch.no_grad():  # a smooth field, as the smoothness term keeps it (the views interpolate between rays)
        cells = torch.arange(light.grid.shape[-1], dtype=torch.float32)
        light.grid.copy_(0.3 * torch.sin(0.5 * cells)[:, None] * torch.cos(0.4 * cells)[None, :])
    a = Camera("a.jpg", 96, 72, 80.0, 80.0, 48.0, 36.0, look_at(np.array([0.0, 0, 5]), np.array([0.1, 0, 0])))
    b = Camera("b.jpg", 96, 72, 80.0, 80.0, 48.0, 36.0, look_at(np.array([4.0, 3, 5]), np.array([4.0, 3.2, 0])))
    ga, gb = light.gain(a)[..., 0].detach().numpy(), light.gain(b)[..., 0].detach().numpy()
    ra, rb = world_rays(a), world_rays(b)
    # pixel pairs whose rays point the same way (within 0.3 degrees) in two cameras at different places
    flat_b = rb.reshape(-1, 3)
    matched = 0
    for y in range(4, 72, 8):
        for x in range(4, 96, 8):
            k = int(np.argmax(flat_b @ ra[y, x]))
            if flat_b[k] @ ra[y, x] > np.cos(np.radians(0.3)):
                matched += 1
                assert gb.reshape(-1)[k] == pytest.approx(ga[y, x], rel=0.03)
    assert matched > 20
    assert ga.std() > 0.05  # the field is not flat: the equality above says something
    half = light.gain(a.scaled(0.5))[..., 0].detach().numpy()  # a half-size step sees the same field
    assert half[18, 24] == pytest.approx(ga[36, 48], rel=0.03)


def test_the_field_learned_from_some_views_predicts_the_halo_in_a_view_it_never_saw() -> None:
    """What training asks of the light alone: photos that are the render times the halo are matched by it, and
    a held-out view, looking another way from another place, gets its halo from the training views' rays."""
    rng = np.random.default_rng(0)
    ground = np.array([0.0, 0.0, 0.0])

    def camera(i: int, yaw: float) -> Camera:
        centre = np.array([6 * np.cos(yaw), 6 * np.sin(yaw), 6.0]) + rng.normal(0, 0.5, 3)
        return Camera(f"{i}.jpg", 96, 72, 70.0, 70.0, 48.0, 36.0, look_at(centre, ground + rng.normal(0, 1, 3)))

    train = [camera(i, yaw) for i, yaw in enumerate(np.linspace(-0.4, 0.9, 8))]  # looking along the sunlight
    held = camera(99, 0.3)
    light = DirectionalLight(lr=1e-2, device="cpu")
    renders = [torch.rand(72, 96, 3, generator=torch.Generator().manual_seed(i)) * 0.6 + 0.2 for i in range(9)]
    gains = [torch.from_numpy(halo(world_rays(c))).float()[..., None] for c in [*train, held]]
    photos = [r * g for r, g in zip(renders, gains, strict=True)]
    for step in range(800):
        i = step % len(train)
        loss = (light.apply(renders[i], train[i]) - photos[i]).abs().mean() + light.penalty()
        loss.backward()
        light.step()
    with torch.no_grad():
        learned = light.apply(renders[-1], held)
    before = float((renders[-1] - photos[-1]).abs().mean())
    after = float((learned - photos[-1]).abs().mean())
    assert after < 0.35 * before, (before, after)
    assert 1.35 < light.range()[1] < 1.7, light.range()


@pytest.fixture(scope="module")
def in_sunlight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's ground seen with a halo opposite the sun, which moves with each camera."""
    root = tmp_path_factory.mktemp("halo")
    write_sfm_output(root, n_gaussians=3000, ground=True)
    for cam in cameras(12, 96, 72):
        path = root / "images" / cam.name
        pixels = np.asarray(Image.open(path), np.float32)
        Image.fromarray((pixels * halo(world_rays(cam))[..., None] + 0.5).clip(0, 255).astype(np.uint8)).save(path)
    return root


def test_training_learns_the_halo_and_reports_the_render_through_it_beside_the_splats_alone(
        in_sunlight: Path, tmp_path: Path) -> None:
    config = {"iterations": 300, "directionalLight": True, "vignetting": False, **FAST}
    m = run_stage("train", str(in_sunlight), str(tmp_path / "h"), config).metrics
    plain_root = tmp_path / "plain-sfm"
    write_sfm_output(plain_root, n_gaussians=3000, ground=True)
    plain = run_stage("train", str(plain_root), str(tmp_path / "p"), config).metrics
    assert m["lightGainRange"][1] > 1.15, m  # the halo: 1.5 at its centre, learned every 4th step
    assert plain["lightGainRange"][0] > 0.9 and plain["lightGainRange"][1] < 1.1, plain  # constant light
    assert m["psnrPhotographed"] > m["psnr"] + 0.5, m  # held-out photos carry the halo too
    assert abs(plain["psnrPhotographed"] - plain["psnr"]) < 0.5, plain

"""Sky seeds: a far shell where the training photos look above the horizon, coloured from them; none for a
nadir survey."""

from __future__ import annotations

import json

import numpy as np
import torch

from spaceport.api import TrainOptions
from spaceport.stages.train.data import Dataset, View
from spaceport.stages.train.loop import init_params
from spaceport.stages.train.render import Camera
from spaceport.stages.train.sky import BELOW_HORIZON, DISTANCE, scene_up, sky_points, sky_share
from tests.train.fixtures import look_at

W, H, F = 160, 120, 120.0
BLUE, GREY = (0.2, 0.4, 0.9), (0.5, 0.5, 0.5)
GEOREF = json.dumps({"latitude": 55.7, "longitude": 13.2, "altitude": 10.0, "frame": "ENU"}).encode()


def street_view(i: int, held_out: bool = False, sky: tuple[float, float, float] = BLUE) -> View:
    """A camera 1.5 m above the ground looking along the street (+y; a held-out one back down it); its photo is
    sky above the horizon row."""
    centre = np.array([0.0, 2.0 * i, 1.5])
    ahead = centre + np.array([np.sin(i), -5.0 if held_out else 5.0, 0.0])
    cam = Camera(f"{i:02d}.jpg", W, H, F, F, W / 2, H / 2, look_at(centre, ahead), held_out)
    image = np.empty((H, W, 3), np.float32)
    image[: H // 2], image[H // 2:] = sky, GREY
    return View(cam, torch.tensor(image * 255).round().to(torch.uint8))


def nadir_view(i: int) -> View:
    centre = np.array([10.0 * (i % 3), 10.0 * (i // 3), 60.0])
    cam = Camera(f"{i:02d}.jpg", W, H, F, F, W / 2, H / 2, look_at(centre, centre - np.array([0.0, 0.01, 60.0])))
    return View(cam, torch.full((H, W, 3), 120, dtype=torch.uint8))


def ground_points(n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform([-10, -5, 0], [10, 25, 3], (n, 3))


def test_street_photos_get_a_shell_above_the_horizon_coloured_from_the_photos() -> None:
    views = [street_view(i) for i in range(6)]
    up = scene_up(views, GEOREF)
    assert np.allclose(up, [0, 0, 1]) and np.allclose(scene_up(views, None), [0, 0, 1], atol=1e-6)
    assert 0.4 < sky_share([v.camera for v in views], up) < 0.6
    pts, cols, size = sky_points(views, ground_points(), up)
    assert len(pts) > 50
    centre = np.mean([v.camera.centre for v in views], axis=0)
    direction = (pts - centre) / np.linalg.norm(pts - centre, axis=1, keepdims=True)
    assert (direction[:, 2] > -BELOW_HORIZON).all()
    reach = np.percentile(np.linalg.norm(ground_points() - centre, axis=1), 99)
    assert np.allclose(np.linalg.norm(pts - centre, axis=1), DISTANCE * reach)
    # every seed is in some photo's view; well above the horizon they take the sky's colour
    high = direction[:, 2] > 0.15
    assert high.sum() > 20 and np.allclose(cols[high], BLUE, atol=0.02)
    assert 0 < size < DISTANCE * reach  # seeds sized by their spacing, not the whole shell


def test_a_nadir_survey_and_photos_without_a_horizon_get_no_sky() -> None:
    views = [nadir_view(i) for i in range(6)]
    up = scene_up(views, GEOREF)
    assert sky_share([v.camera for v in views], up) == 0.0
    assert len(sky_points(views, ground_points(), up)[0]) == 0
    assert len(sky_points([street_view(i) for i in range(6)], ground_points(), None)[0]) == 0


def test_init_params_seeds_the_sky_from_training_photos_only_and_keeps_the_cap() -> None:
    """A held-out photo (looking the other way, with a red sky) neither places nor colours seeds; the shell never
    crowds out the scene's seeds."""
    views = [street_view(i, held_out=i == 3, sky=(0.9, 0.1, 0.1) if i == 3 else BLUE) for i in range(8)]
    pts = ground_points(2000)
    data = Dataset(views, pts, np.full((len(pts), 3), 0.5, np.float32), GEOREF)
    params = init_params(data, TrainOptions(max_gaussians=2000), extent=10.0, device="cpu")
    n = len(params["means"])
    far = np.linalg.norm(params["means"].detach().numpy() - [0, 7, 1.5], axis=1) > 100
    assert n == 2000 and 100 < far.sum() < 1000  # the sky's seeds, and the scene's thinned to make room
    small = init_params(data, TrainOptions(max_gaussians=1000), extent=10.0, device="cpu")["means"].detach().numpy()
    on_sky = (np.linalg.norm(small - [0, 7, 1.5], axis=1) > 100).sum()
    assert len(small) == 1000 and on_sky == min(far.sum(), 500)  # at most half the cap goes to the sky
    colour = params["sh0"].detach().numpy()[far, 0] * 0.28209479177387814 + 0.5
    high = params["means"].detach().numpy()[far, 2] > 100
    assert np.allclose(colour[high], BLUE, atol=0.02)
    assert (params["means"].detach().numpy()[far, 1] > 0).all()  # nothing behind the street: only held-out saw it
    assert torch.sigmoid(params["opacities"][torch.tensor(far)]).min() > 0.5
    none = init_params(data, TrainOptions(max_gaussians=2000, sky="off"), extent=10.0, device="cpu")
    assert len(none["means"]) == 2000 and (np.linalg.norm(none["means"].detach().numpy(), axis=1) < 100).all()

"""Lens vignetting learned with the scene: the camera's fall-off is found, the splats keep an average photo's
colours, and the headline PSNR still renders the splats alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spaceport.stages.runner import run_stage
from spaceport.stages.train.render import Camera
from spaceport.stages.train.vignetting import Vignetting
from tests.train.fixtures import write_sfm_output
from tests.train.test_stage import FAST

FALL_OFF = 0.35
"""The photos' gain is 1 - FALL_OFF r^2 (r: distance from the centre over the corner's): 0.65 in the corners."""


@pytest.fixture(scope="module")
def vignetted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos of ground that fills them to the corners (the fixture's usual scene leaves them black), taken
    through a lens that darkens them."""
    root = tmp_path_factory.mktemp("vignetted")
    write_sfm_output(root, n_gaussians=3000, ground=True)
    for path in sorted((root / "images").iterdir()):
        pixels = np.asarray(Image.open(path), np.float32)
        h, w = pixels.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        r2 = ((xs - w / 2) ** 2 + (ys - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        Image.fromarray((pixels * (1 - FALL_OFF * r2)[..., None] + 0.5).clip(0, 255).astype(np.uint8)).save(path)
    return root


def test_gain_is_one_at_the_centre_and_shared_by_a_cameras_photos_at_any_size() -> None:
    w2c = np.eye(4)
    cams = [Camera(f"{i}.jpg", 80, 60, 70.0, 70.0, 40.0, 30.0, w2c) for i in range(3)]
    other = Camera("other.jpg", 60, 80, 70.0, 70.0, 30.0, 40.0, w2c)  # portrait: another camera
    v = Vignetting([*cams, other], lr=1e-3, device="cpu")
    assert v.group["0.jpg"] == v.group["2.jpg"] != v.group["other.jpg"]
    with torch.no_grad():
        v.coeffs[v.group["0.jpg"]] = torch.tensor([-0.3, 0.0, 0.0])
    gain = v.gain(cams[1])[..., 0].detach()
    assert gain.shape == (60, 80) and abs(float(gain.mean()) - 1) < 1e-5  # the splats keep an average photo's colours
    assert abs(float(gain[0, 0] / gain[30, 40]) - 0.7) < 0.02  # corner against centre (the corner pixel's r < 1)
    assert v.corner_gains()[v.group["0.jpg"]] == 0.7
    half = v.gain(cams[1].scaled(0.5))[..., 0].detach()  # half-size steps see the same fall-off
    assert abs(float(half[0, 0] / half[15, 20]) - float(gain[0, 0] / gain[30, 40])) < 0.03
    assert float(v.gain(other).detach().min()) == 1.0


def test_the_gain_fits_a_fall_off_it_is_shown() -> None:
    """What training asks of the gain alone: photos that are the render times a fall-off are matched by it."""
    w2c = np.eye(4)
    cam = Camera("0.jpg", 96, 72, 80.0, 80.0, 48.0, 36.0, w2c)
    render = torch.rand(72, 96, 3, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    ys, xs = torch.meshgrid(torch.arange(72) + 0.5, torch.arange(96) + 0.5, indexing="ij")
    r2 = ((xs - 48) ** 2 + (ys - 36) ** 2) / (48**2 + 36**2)
    fall_off = 1 - FALL_OFF * r2
    photo = render * (fall_off / fall_off.mean())[..., None]
    v = Vignetting([cam], lr=2e-3, device="cpu")
    for _ in range(600):
        (v.apply(render, cam) - photo).abs().mean().backward()
        v.step()
    assert abs(v.corner_gains()[0] - (1 - FALL_OFF)) < 0.03, v.corner_gains()


def test_training_learns_a_fall_off_from_vignetted_photos_only(vignetted: Path, tmp_path: Path) -> None:
    config = {"iterations": 800, "vignetting": True, **FAST}  # the gain learns every 4th step
    m = run_stage("train", str(vignetted), str(tmp_path / "v"), config).metrics
    plain_root = tmp_path / "plain-sfm"
    write_sfm_output(plain_root, n_gaussians=3000, ground=True)
    plain = run_stage("train", str(plain_root), str(tmp_path / "p"), config).metrics
    assert 1 - FALL_OFF - 0.05 < m["vignettingCornerGain"][0] < 0.8, m  # the prior holds it back a little
    assert abs(plain["vignettingCornerGain"][0] - 1) < 0.05, plain
    # held-out photos are vignetted too: through the learned gain they match better than the splats alone,
    # which the headline PSNR still renders
    assert m["psnrVignetted"] > m["psnr"] + 0.5, m

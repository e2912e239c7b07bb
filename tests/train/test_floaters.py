"""Floaters in front of the cameras are removed; the scene the cameras photograph is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spaceport.api import TrainOptions
from spaceport.stages.train.data import load_dataset
from spaceport.stages.train.floaters import near_camera_mask, near_limits
from spaceport.stages.train.loop import Trainer
from spaceport.storage import LocalStore
from tests.train.fixtures import write_sfm_output
from tests.train.test_stage import FAST


@pytest.fixture(scope="module")
def sfm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sfm")
    write_sfm_output(root)
    return root


def test_near_limits_follow_the_nearest_photographed_surface(sfm: Path, tmp_path: Path) -> None:
    data = load_dataset(LocalStore(sfm), tmp_path, holdout_every=0, downscale=1.0)
    cams = [v.camera for v in data.views]
    limits = near_limits(cams, data.points, 0.5)
    # the cameras stand ~3.6 from the scene, whose points reach ~1.2 towards them
    assert np.all((limits > 0.8) & (limits < 1.6)), limits
    centre, target = cams[0].centre, np.zeros(3)
    towards = (target - centre) / np.linalg.norm(target - centre)
    floaters = torch.tensor(np.stack([centre + towards * d for d in (0.3, 0.6, 1.0)]), dtype=torch.float32)
    behind = torch.tensor(np.stack([centre - towards * 0.5]), dtype=torch.float32)  # behind camera 0, out of view
    scene = torch.tensor(data.points, dtype=torch.float32)
    mask = near_camera_mask(torch.cat([floaters, behind, scene]), cams, limits)
    assert mask[:3].all() and not mask[3:].any()


def test_training_removes_floaters_in_front_of_the_cameras(sfm: Path, tmp_path: Path) -> None:
    data = load_dataset(LocalStore(sfm), tmp_path, holdout_every=4, downscale=1.0)
    trainer = Trainer(data, TrainOptions.model_validate({**FAST, "iterations": 60, "nearCameraPrune": 0.5}),
                      "cpu", 3.0)
    cam = trainer.train_views[0].camera
    towards = -cam.centre / np.linalg.norm(cam.centre)
    n = len(trainer.params["means"])
    with torch.no_grad():  # plant 20 floaters half a unit in front of the first training camera
        trainer.params["means"][:20] = torch.tensor(cam.centre + 0.5 * towards, dtype=torch.float32)
    planted = trainer.params["means"][:20].detach().clone()
    assert trainer.prune_floaters() == 20
    assert len(trainer.params["means"]) == n - 20
    assert not any(torch.equal(m, planted[0]) for m in trainer.params["means"].detach())


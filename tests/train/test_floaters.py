"""Floaters in the space the photos saw through are removed; the surfaces the photos observed are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spaceport.api import TrainOptions
from spaceport.stages.train.data import load_dataset
from spaceport.stages.train.floaters import FreeSpace
from spaceport.stages.train.loop import Trainer
from spaceport.storage import LocalStore
from tests.train.fixtures import write_sfm_output
from tests.train.test_stage import FAST


@pytest.fixture(scope="module")
def sfm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sfm")
    write_sfm_output(root)
    return root


def test_the_model_s_tracks_say_which_photo_saw_which_point(sfm: Path, tmp_path: Path) -> None:
    data = load_dataset(LocalStore(sfm), tmp_path, holdout_every=0, downscale=1.0)
    for view in data.views:
        ids = data.observed[view.camera.name]
        assert 50 < len(ids) <= len(data.points)
        cam = view.camera
        pc = data.points[ids] @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
        assert (pc[:, 2] > 0).all()


def test_free_space_lies_between_each_camera_and_what_it_observed(sfm: Path, tmp_path: Path) -> None:
    data = load_dataset(LocalStore(sfm), tmp_path, holdout_every=0, downscale=1.0)
    cams = [v.camera for v in data.views]
    space = FreeSpace(cams, data.points, [data.observed[c.name] for c in cams], 0.8)
    centre = cams[0].centre
    towards = -centre / np.linalg.norm(centre)  # camera 0 looks at the origin, ~3.6 away
    floaters = torch.tensor(np.stack([centre + towards * d for d in (0.3, 1.0, 1.5)]), dtype=torch.float32)
    behind = torch.tensor(np.stack([centre - towards * 0.5, [0.0, 0.0, -3.0]]), dtype=torch.float32)
    surfaces = torch.tensor(data.points, dtype=torch.float32)
    mask = space.mask(torch.cat([floaters, behind, surfaces]))
    assert mask[:3].all()
    assert not mask[3:].any()  # behind the camera, under the scene, and every observed point itself
    # without observations a camera sets no limit
    blind = FreeSpace(cams, data.points, [np.zeros(0, np.int64)] * len(cams), 0.8)
    assert not blind.mask(floaters).any()


def test_training_removes_floaters(sfm: Path, tmp_path: Path) -> None:
    data = load_dataset(LocalStore(sfm), tmp_path, holdout_every=4, downscale=1.0)
    trainer = Trainer(data, TrainOptions.model_validate({**FAST, "iterations": 60, "freeSpacePrune": 0.8}),
                      "cpu", 3.0)
    cam = trainer.train_views[0].camera
    towards = -cam.centre / np.linalg.norm(cam.centre)
    n = len(trainer.params["means"])
    with torch.no_grad():  # plant 20 floaters a unit in front of the first training camera
        trainer.params["means"][:20] = torch.tensor(cam.centre + towards, dtype=torch.float32)
    planted = trainer.params["means"][0].detach().clone()
    assert trainer.prune_floaters() == 20
    assert len(trainer.params["means"]) == n - 20
    assert not (trainer.params["means"].detach() == planted).all(1).any()

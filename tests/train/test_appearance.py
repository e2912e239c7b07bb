"""Per-photo colour, random backgrounds, the antialiased mode and floater removal in training: what they
learn, that held-out photos are never fitted, and that a stopped run resumes bit for bit with all of them on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spaceport.api import TrainOptions
from spaceport.contract import RetryableError
from spaceport.splats import read_ply
from spaceport.stages.runner import run_stage
from spaceport.stages.train.appearance import PhotoColour
from spaceport.stages.train.data import load_dataset
from spaceport.stages.train.loop import Trainer
from spaceport.storage import LocalStore
from tests.train.fixtures import write_sfm_output
from tests.train.test_stage import FAST, sigterm_at

DARKENED = ("view_002.png", "view_006.png", "view_010.png")
"""Training photos exposed at 60%; none is a capture-order neighbour of a held-out one (0, 4, 8)."""
GAIN = 0.6


@pytest.fixture(scope="module")
def exposures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture scene, with three training photos darkened as an auto-exposing camera would."""
    root = tmp_path_factory.mktemp("exposures")
    write_sfm_output(root)
    for name in DARKENED:
        pixels = np.asarray(Image.open(root / "images" / name), np.float32)
        Image.fromarray((pixels * GAIN + 0.5).astype(np.uint8)).save(root / "images" / name)
    return root


def test_neighbours_are_the_nearest_training_photos_in_capture_order() -> None:
    names = ["a", "b", "c", "d", "e", "f"]
    colour = PhotoColour(["b", "c", "e", "f"], names, 1e-3, "cpu", "affine")
    assert [colour.names[i] for i in colour.neighbours("a")] == ["b"]  # the first photo: one neighbour
    assert [colour.names[i] for i in colour.neighbours("d")] == ["c", "e"]
    with torch.no_grad():
        colour.delta[colour.index["c"], 0, 0] = 0.2
        colour.delta[colour.index["e"], 0, 0] = 0.4
    image = torch.full((2, 2, 3), 0.5)
    held = colour.apply_held_out(image, "d")
    assert torch.allclose(held[..., 0], torch.full((2, 2), 0.5 * 1.3)) and torch.equal(held[..., 1:], image[..., 1:])
    assert torch.equal(colour.apply_held_out(image, "d", "identity"), image)


def test_per_photo_colour_takes_up_exposure_and_leaves_the_held_out_photos_unfitted(exposures: Path,
                                                                                  tmp_path: Path) -> None:
    data = load_dataset(LocalStore(exposures), tmp_path, holdout_every=4, downscale=1.0)
    config = {"iterations": 200, **FAST, "shDegree": 1}
    trainers = {}
    for mode in ("off", "exposure"):
        trainers[mode] = Trainer(data, TrainOptions.model_validate({**config, "appearance": mode,
                                                                    "appearanceLr": 0.01}), "cpu", 3.0)
        while trainers[mode].step < 200:
            trainers[mode].train_step()
    colour = trainers["exposure"].colour
    assert colour is not None
    gains = torch.diagonal(colour.delta.detach()[:, :, :3], dim1=1, dim2=2).mean(1)
    dark = [colour.index[n] for n in DARKENED]
    rest = [i for i in range(len(gains)) if i not in dark]
    # the darkened photos' transforms scale colour down, relative to the others'
    assert float(gains[dark].mean() - gains[rest].mean()) < -0.15, gains
    assert torch.equal(colour.delta.detach()[:, 0, 1:3], torch.zeros(len(gains), 2))  # no mixing
    before = colour.delta.detach().clone()
    plain = trainers["off"].evaluate()[0]
    alone, _, _ = trainers["exposure"].evaluate()
    borrowed, _, _ = trainers["exposure"].evaluate(colour="neighbours")
    assert torch.equal(colour.delta.detach(), before)  # evaluating fits nothing
    # the transforms absorbed the darkening: through their neighbours' transforms (undarkened photos, like
    # them) the held-out photos are matched better than by a scene that had to average it in. The splats
    # alone (the headline) have the colours of an average photo, a third of which were darkened.
    assert borrowed > plain + 0.5, (plain, alone, borrowed)
    assert borrowed > alone + 0.3, (plain, alone, borrowed)


def test_random_background_fills_what_the_splats_leave_transparent(exposures: Path, tmp_path: Path) -> None:
    data = load_dataset(LocalStore(exposures), tmp_path, holdout_every=4, downscale=1.0)
    trainer = Trainer(data, TrainOptions.model_validate({**FAST, "randomBackground": True, "ssimWeight": 0.0}),
                      "cpu", 3.0)
    with torch.no_grad():
        trainer.params["opacities"].fill_(-30.0)  # nothing drawn: the render is the background alone
    view = trainer.view_for(0)
    rng = torch.get_rng_state()
    loss = trainer.train_step()
    torch.set_rng_state(rng)
    background = torch.rand(3)
    expected = float((background - trainer.target(view)).abs().mean())
    assert loss == pytest.approx(expected, rel=1e-5)


def test_antialiased_training_writes_the_model_and_resumes_exactly_with_every_option(exposures: Path,
                                                                                    tmp_path: Path) -> None:
    config = {"iterations": 90, "checkpointEvery": 25, "appearance": "exposure", "randomBackground": True,
              "antialiased": True, "freeSpacePrune": 0.8, "vignetting": True, "directionalLight": True,
              "maxElongation": 3.0, **FAST}
    with pytest.raises(RetryableError, match="step 60"):
        run_stage("train", str(exposures), str(tmp_path / "a"), config, listener=sigterm_at(60))
    resumed = run_stage("train", str(exposures), str(tmp_path / "a"), config)
    assert resumed.metrics["resumedFromStep"] == 60
    straight = run_stage("train", str(exposures), str(tmp_path / "b"), config)
    assert (tmp_path / "a" / "splats.ply").read_bytes() == (tmp_path / "b" / "splats.ply").read_bytes()
    for key in ("psnr", "psnrNeighbourColour", "photoGainSpread", "gaussians", "floatersRemoved", "psnrVignetted",
                "vignettingCornerGain", "psnrPhotographed", "lightGainRange"):
        assert resumed.metrics[key] == straight.metrics[key], key
    scene = read_ply(tmp_path / "a" / "splats.ply")
    assert scene.model == "antialiased"
    log_scales = np.sort(scene.scales, axis=1)
    assert np.all(log_scales[:, 2] - log_scales[:, 1] <= np.log(3.0) + 1e-5)  # no needles (maxElongation)
    result = json.loads((tmp_path / "b" / "result.json").read_text())
    assert result["metrics"]["peakRssBytes"] > 0

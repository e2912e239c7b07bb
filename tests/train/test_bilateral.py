"""Per-photo bilateral grids (appearance: bilateral): the identity at rest, a tone curve that differs between shadows
and highlights is taken up (which one affine transform per photo cannot), held-out photos are never fitted, and a
training run with them resumes bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spaceport.contract import RetryableError
from spaceport.stages.runner import run_stage
from spaceport.stages.train.appearance import PhotoColour
from spaceport.stages.train.bilateral import PhotoBilateralGrid
from tests.train.fixtures import write_sfm_output
from tests.train.test_stage import FAST, sigterm_at


def tone_mapped(image: torch.Tensor) -> torch.Tensor:
    """A local tone map as phones apply it: shadows lifted, highlights pulled down, and warmer on the left."""
    curve = image ** 0.6
    warm = torch.linspace(1.15, 0.9, image.shape[1])[None, :, None] * torch.tensor([1.0, 0.97, 0.9])
    return (curve * warm).clamp(0, 1)


def test_a_grid_at_rest_changes_nothing_and_held_out_photos_take_their_neighbours_or_nothing() -> None:
    grid = PhotoBilateralGrid(["b", "c"], ["a", "b", "c"], 1e-3, "cpu")
    image = torch.rand(24, 32, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(grid.apply(image, "b"), image)
    with torch.no_grad():
        grid.delta[grid.index["b"], 3] = 0.1  # the red offset of every cell
    assert torch.allclose(grid.apply_held_out(image, "a")[..., 0], image[..., 0] + 0.1)  # "b" is its neighbour
    assert torch.equal(grid.apply_held_out(image, "a", "identity"), image)
    assert grid.summary() == {"photoGainSpread": 0.0, "photoOffsetSpread": 0.1}


def test_the_grid_takes_up_a_local_tone_map_that_one_affine_transform_cannot() -> None:
    render = torch.rand(48, 64, 3, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    photo = tone_mapped(render)
    errors = {}
    for name, model in (("affine", PhotoColour(["p"], ["p"], 1e-2, "cpu", "affine")),
                        ("bilateral", PhotoBilateralGrid(["p"], ["p"], 1e-2, "cpu"))):
        for _ in range(300):
            loss = (model.apply(render, "p") - photo).abs().mean()
            loss.backward()
            model.step()
        with torch.no_grad():
            errors[name] = float((model.apply(render, "p") - photo).abs().mean())
    before = float((render - photo).abs().mean())
    assert errors["bilateral"] < 0.3 * errors["affine"] < 0.3 * before, (before, errors)


@pytest.fixture(scope="module")
def tone_mapped_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture scene with every other photo tone-mapped, as a phone's HDR mode does now and then."""
    root = tmp_path_factory.mktemp("tone")
    write_sfm_output(root)
    for path in sorted((root / "images").iterdir())[1::2]:
        pixels = torch.from_numpy(np.asarray(Image.open(path), np.float32) / 255)
        Image.fromarray((tone_mapped(pixels).numpy() * 255 + 0.5).astype(np.uint8)).save(path)
    return root


def test_training_with_grids_reports_the_splats_alone_and_resumes_exactly(tone_mapped_photos: Path,
                                                                         tmp_path: Path) -> None:
    config = {"iterations": 80, "checkpointEvery": 25, "appearance": "bilateral", **FAST}
    with pytest.raises(RetryableError, match="step 50"):
        run_stage("train", str(tone_mapped_photos), str(tmp_path / "a"), config, listener=sigterm_at(50))
    resumed = run_stage("train", str(tone_mapped_photos), str(tmp_path / "a"), config)
    straight = run_stage("train", str(tone_mapped_photos), str(tmp_path / "b"), config)
    assert resumed.metrics["resumedFromStep"] == 50
    assert (tmp_path / "a" / "splats.ply").read_bytes() == (tmp_path / "b" / "splats.ply").read_bytes()
    m = straight.metrics
    assert m["photoGainSpread"] > 0.02, m  # the grids moved
    assert "psnrNeighbourColour" in m and m["psnr"] == resumed.metrics["psnr"]

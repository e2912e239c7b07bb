"""The training stage end to end on a small generated scene: quality, outputs, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from spaceport.contract import BadInputError, ProgressRecord, RetryableError
from spaceport.splats import ply_bytes, read_ply
from spaceport.stages.runner import run_stage
from spaceport.stages.train import checkpoint
from spaceport.stages.train.render import load_cameras, render
from spaceport.storage import LocalStore
from tests.train.fixtures import write_sfm_output

FAST = {"densifyFrom": 40, "densifyEvery": 40, "densifyUntil": 160, "shDegreeInterval": 50, "holdoutEvery": 4}


@pytest.fixture(scope="module")
def sfm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sfm")
    write_sfm_output(root, georef=True)
    return root


def test_training_beats_initialisation_and_writes_the_contract(sfm: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    result = run_stage("train", str(sfm), str(tmp_path), {"iterations": 240, **FAST},
                       listener=lambda r: messages.append(r.message))
    m = result.metrics
    assert m["psnr"] > m["initialPsnr"] + 4.0, m
    assert m["evalViews"] == "heldOut" and m["steps"] == 240 and m["device"] == "cpu"
    assert m["gaussians"] > 300, "densification should have grown the 300 SfM points"
    assert {"ssim", "durations", "stepsPerSecond", "peakMemoryBytes"} <= set(m) and "training" in m["durations"]
    assert result.typed_metrics().unknown == [], "every metric the stage reports has a field in TrainMetrics"
    assert "lpips" not in m and not result.warnings  # LPIPS is a GPU metric: on CPU, absent and unremarked
    assert any(msg.startswith("step 240/240 loss") and "psnr" in msg for msg in messages)

    scene = read_ply(tmp_path / "splats.ply")
    assert scene.count == m["gaussians"] and scene.sh_degree == 3
    assert (tmp_path / "georef.json").read_bytes() == (sfm / "georef.json").read_bytes()
    cameras = load_cameras(LocalStore(tmp_path))
    assert [c.held_out for c in cameras] == [i % 4 == 0 for i in range(12)]
    # the stored scene renders the held-out view about as well as the metric says
    cam = cameras[0]
    from PIL import Image

    truth = np.asarray(Image.open(sfm / "images" / cam.name), np.float32) / 255
    # held-out ground truth at the trained resolution, lossless, named in cameras.json
    stored = sorted(p.name for p in (tmp_path / "holdout").iterdir())
    assert stored == sorted(f"{c.name}.png" for c in cameras if c.held_out)
    entry = json.loads((tmp_path / "cameras.json").read_text())["cameras"][0]
    assert entry["heldOut"] and entry["image"] == f"holdout/{cam.name}.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / entry["image"]), np.float32) / 255, truth)
    mse = float(((render(scene, cam) - truth) ** 2).mean())
    assert abs(-10 * np.log10(mse) - m["psnr"]) < 3.0


def test_ply_round_trip(sfm: Path, tmp_path: Path) -> None:
    run_stage("train", str(sfm), str(tmp_path), {"iterations": 5, **FAST})
    scene = read_ply(tmp_path / "splats.ply")
    again = read_ply(ply_bytes(scene))
    for name in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        assert np.array_equal(getattr(scene, name), getattr(again, name)), name


def sigterm_at(step: int):
    def listener(record: ProgressRecord) -> None:
        if record.message.startswith(f"step {step}/"):
            os.kill(os.getpid(), signal.SIGTERM)

    return listener


def test_sigterm_checkpoints_and_resume_continues_exactly(sfm: Path, tmp_path: Path) -> None:
    # killed during the half-size steps, with stereo seeds: both must come back identical on resume
    config = {"iterations": 120, "checkpointEvery": 25, "halfResolutionSteps": 90, "initStereoPoints": 200, **FAST}
    with pytest.raises(RetryableError, match="step 70"):
        run_stage("train", str(sfm), str(tmp_path / "a"), config, listener=sigterm_at(70))
    assert not (tmp_path / "a" / "splats.ply").exists()
    resumed = run_stage("train", str(sfm), str(tmp_path / "a"), config)
    assert resumed.metrics["resumedFromStep"] == 70
    assert resumed.metrics["steps"] == 120
    straight = run_stage("train", str(sfm), str(tmp_path / "b"), config)
    assert "resumedFromStep" not in straight.metrics
    # identical parameters, optimizer and densification state => identical output
    assert (tmp_path / "a" / "splats.ply").read_bytes() == (tmp_path / "b" / "splats.ply").read_bytes()
    assert resumed.metrics["gaussians"] == straight.metrics["gaussians"]


def test_corrupt_or_foreign_checkpoints_are_ignored(sfm: Path, tmp_path: Path) -> None:
    config = {"iterations": 60, "checkpointEvery": 20, **FAST}
    with pytest.raises(RetryableError):
        run_stage("train", str(sfm), str(tmp_path), config, listener=sigterm_at(50))
    store = LocalStore(tmp_path)
    metas = {s: json.loads(store.read_text(f"checkpoints/slot-{s}.json")) for s in (0, 1)}
    newest = max(metas, key=lambda s: metas[s]["step"])
    assert metas[newest]["step"] == 50 and metas[1 - newest]["step"] == 40
    fp = metas[newest]["fingerprint"]
    # a half-written slot: data truncated after its manifest was written
    data = store.read_bytes(f"checkpoints/slot-{newest}.pt")
    store.write_bytes(f"checkpoints/slot-{newest}.pt", data[: len(data) // 2])
    state, step = checkpoint.load_latest(store, fp)
    assert step == 40 and int(state["step"]) == 40
    assert checkpoint.load_latest(store, "another-setup") is None
    result = run_stage("train", str(sfm), str(tmp_path), config)
    assert result.metrics["resumedFromStep"] == 40


def test_missing_or_empty_model_names_the_file(sfm: Path, tmp_path: Path) -> None:
    broken = tmp_path / "in"
    shutil.copytree(sfm, broken)
    (broken / "sparse" / "points3D.bin").unlink()
    with pytest.raises(BadInputError, match=r"points3D\.bin"):
        run_stage("train", str(broken), str(tmp_path / "out1"), {"iterations": 5})
    (broken / "sparse" / "points3D.bin").write_bytes(b"")
    with pytest.raises(BadInputError, match=r"points3D\.bin"):
        run_stage("train", str(broken), str(tmp_path / "out2"), {"iterations": 5})
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    with pytest.raises(BadInputError, match=r"cameras\.bin"):
        run_stage("train", str(empty), str(tmp_path / "out3"), {"iterations": 5})


def test_missing_image_names_the_file(sfm: Path, tmp_path: Path) -> None:
    broken = tmp_path / "in"
    shutil.copytree(sfm, broken)
    (broken / "images" / "view_003.png").unlink()
    with pytest.raises(BadInputError, match=r"images/view_003\.png"):
        run_stage("train", str(broken), str(tmp_path / "out"), {"iterations": 5})


def test_nan_loss_stops_with_the_reason_and_keeps_the_last_checkpoint(sfm: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from spaceport.stages.train import loop

    config = {"iterations": 60, "checkpointEvery": 20, **FAST}
    real = loop.Trainer.train_step

    def poisoned(self: loop.Trainer) -> float:
        if self.step == 30:  # a diverging run: parameters go non-finite
            with torch.no_grad():
                self.params["sh0"].fill_(float("nan"))
        return real(self)

    monkeypatch.setattr(loop.Trainer, "train_step", poisoned)
    with pytest.raises(BadInputError, match=r"diverged.*nan at step 30"):
        run_stage("train", str(sfm), str(tmp_path), config)
    store = LocalStore(tmp_path)
    steps = sorted(json.loads(store.read_text(f"checkpoints/slot-{s}.json"))["step"] for s in (0, 1)
                   if store.exists(f"checkpoints/slot-{s}.json"))
    assert steps == [20]


def test_half_resolution_steps_train_on_half_size_views(sfm: Path, tmp_path: Path) -> None:
    from spaceport.api import TrainOptions
    from spaceport.stages.train.data import load_dataset
    from spaceport.stages.train.loop import Trainer

    options = TrainOptions.model_validate({"halfResolutionSteps": 5, **FAST})
    data = load_dataset(LocalStore(sfm), tmp_path, holdout_every=4, downscale=1.0)
    trainer = Trainer(data, options, "cpu", 3.0)
    early, late = trainer.view_for(4), trainer.view_for(5)
    assert (early.camera.width, early.camera.height) == (48, 36)
    assert tuple(early.image.shape) == (36, 48, 3) and early.image.dtype == torch.uint8
    assert (late.camera.width, late.camera.height) == (96, 72)
    full = next(v for v in data.views if v.camera.name == early.camera.name)
    assert abs(float(early.image.float().mean()) - float(full.image.float().mean())) < 1.0  # area average
    assert trainer.view_for(4) is early  # made once


def test_opacities_are_reset_every_opacity_reset_every_steps(sfm: Path, tmp_path: Path) -> None:
    from spaceport.api import TrainOptions
    from spaceport.stages.train.data import load_dataset
    from spaceport.stages.train.loop import Trainer

    options = TrainOptions.model_validate({**FAST, "opacityResetEvery": 30, "densifyFrom": 1000})
    trainer = Trainer(load_dataset(LocalStore(sfm), tmp_path, holdout_every=4, downscale=1.0), options, "cpu", 3.0)
    with torch.no_grad():
        trainer.params["opacities"].fill_(3.0)  # sigmoid 0.95, far above the reset value
    while trainer.step < 30:  # steps 0..29
        trainer.train_step()
        assert float(torch.sigmoid(trainer.params["opacities"].detach()).min()) > 0.5, trainer.step
    trainer.train_step()  # step 30 ends with the reset
    assert float(torch.sigmoid(trainer.params["opacities"].detach()).max()) <= trainer.strategy.prune_opa * 2.0 + 1e-6


def test_opacity_reg_adds_the_mean_opacity_to_the_loss(sfm: Path, tmp_path: Path) -> None:
    from spaceport.api import TrainOptions
    from spaceport.stages.train.data import load_dataset
    from spaceport.stages.train.loop import Trainer

    data = load_dataset(LocalStore(sfm), tmp_path, holdout_every=4, downscale=1.0)
    losses, opacities = [], []
    for weight in (0.0, 0.5):
        options = TrainOptions.model_validate({**FAST, "opacityReg": weight, "densifyFrom": 1000})
        trainer = Trainer(data, options, "cpu", 3.0)
        mean_before = float(torch.sigmoid(trainer.params["opacities"].detach()).mean())
        losses.append(trainer.train_step() - weight * mean_before)  # the photo loss of the same first step
        while trainer.step < 20:
            trainer.train_step()
        opacities.append(float(torch.sigmoid(trainer.params["opacities"].detach()).mean()))
    assert abs(losses[0] - losses[1]) < 1e-6  # the first step's loss differs by exactly the weighted mean
    assert opacities[1] < 0.8 * opacities[0]  # and the term fades Gaussians


def test_lpips_says_why_it_cannot_run() -> None:
    import importlib.util

    from spaceport.stages.train.metrics import lpips_scorer

    assert lpips_scorer("cpu") == (None, "LPIPS is computed on GPU only")
    if importlib.util.find_spec("lpips") is None:  # as in CI: the package is the stage image's gpu extra
        score, why = lpips_scorer("cuda")
        assert score is None and "lpips package" in why and "spaceport[gpu]" in why


def test_mse_weight_adds_the_mean_squared_error_to_the_loss(sfm: Path, tmp_path: Path) -> None:
    from spaceport.api import TrainOptions
    from spaceport.stages.train.data import load_dataset
    from spaceport.stages.train.loop import Trainer

    data = load_dataset(LocalStore(sfm), tmp_path, holdout_every=4, downscale=1.0)
    losses, errors = [], []
    for weight in (0.0, 10.0):
        trainer = Trainer(data, TrainOptions.model_validate({**FAST, "mseWeight": weight}), "cpu", 3.0)
        view = trainer.view_for(0)
        with torch.no_grad():
            image, _, _ = trainer.render(view)
        errors.append(float(((image - trainer.target(view)) ** 2).mean()))
        losses.append(trainer.train_step())
    assert errors[0] == errors[1] > 1e-4  # the same first render, visibly wrong
    assert losses[1] - losses[0] == pytest.approx(10.0 * errors[0], rel=1e-4)

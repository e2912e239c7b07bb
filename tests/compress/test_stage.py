"""The compression stage through the stage runner (as `spaceport stage compress` runs it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spaceport.contract import BadInputError
from spaceport.splats import ply_bytes
from spaceport.stages.compress import quality
from spaceport.stages.runner import run_stage
from spaceport.storage import S3Store, s3_client
from tests.compress.helpers import GEOREF, small_scene, splat_transform_decode, write_train_output
from tests.s3 import moto_s3, s3_environment

FAST = {"kmeansIterations": 3}


def _write_holdout_photo(train_dir: Path, scene: object) -> None:
    """What the training stage leaves for held-out views: the photo at the trained resolution."""
    from PIL import Image

    from spaceport.stages.train.render import load_cameras, render
    from spaceport.storage import LocalStore

    cam = next(c for c in load_cameras(LocalStore(train_dir)) if c.held_out)
    noise = np.random.default_rng(0).normal(0, 0.02, (cam.height, cam.width, 3))
    photo = np.clip(render(scene, cam) + noise, 0, 1)
    (train_dir / "holdout").mkdir()
    Image.fromarray((photo * 255 + 0.5).astype(np.uint8)).save(train_dir / "holdout" / f"{cam.name}.png")


def test_stage_writes_every_format_with_metrics(tmp_path: Path) -> None:
    scene = small_scene(2000)
    inp = write_train_output(tmp_path / "train", scene, cameras=2)
    _write_holdout_photo(inp, scene)
    result = run_stage("compress", str(inp), str(tmp_path / "out"),
                       {**FAST, "formats": ["sog", "sog-unbundled", "sogs-v1"], "ordering": "auto"})
    out = tmp_path / "out"
    assert (out / "scene.sog").is_file() and (out / "sog" / "meta.json").is_file()
    assert (out / "sogs-v1" / "meta.json").is_file()
    m = result.metrics
    assert m["splats"] == 2000 and m["droppedNonFinite"] == 0
    assert m["sogBytes"] == (out / "scene.sog").stat().st_size
    assert m["plyBytes"] == (inp / "splats.ply").stat().st_size
    assert m["compressionRatio"] == pytest.approx(m["plyBytes"] / m["sogBytes"], rel=1e-3) and m["compressionRatio"] > 4
    assert set(m["orderingBytes"]) == {"morton", "plas"}
    assert m["ordering"] == min(m["orderingBytes"], key=m["orderingBytes"].get)
    assert m["georef"] == GEOREF
    assert m["qualityViews"] == 2 and m["psnrVsUncompressedDb"] > 30 and m["ssimVsUncompressed"] > 0.9
    # against the held-out photo (the render plus noise) compression costs a fraction of a dB
    assert m["psnrDropViews"] == 1 and -0.5 < m["psnrDropDb"] < 1.0
    assert m["shPaletteSize"] in (1024, 2048) and "totalSeconds" in m["durations"]
    assert result.typed_metrics().unknown == [], "every metric the stage reports has a field in CompressMetrics"
    assert result.outputs["sog"].endswith("scene.sog")
    meta = json.loads((out / "sog" / "meta.json").read_text())
    assert meta["spaceport"]["georef"] == GEOREF
    # splat-transform still reads a file that carries our extra meta.json field
    assert splat_transform_decode(out / "scene.sog", tmp_path).count == 2000


def test_nan_splats_are_dropped_and_counted(tmp_path: Path) -> None:
    scene = small_scene(1500, sh_degree=1)
    scene.means[3, 0] = np.nan
    scene.shN[10, 0, 2] = np.inf
    inp = write_train_output(tmp_path / "train", scene, cameras=0, georef=False)
    result = run_stage("compress", str(inp), str(tmp_path / "out"), {**FAST, "formats": ["sog"]})
    assert result.metrics["droppedNonFinite"] == 2 and result.metrics["splats"] == 1498
    assert any("2 splat(s)" in w for w in result.warnings)
    assert any("cameras.json" in w for w in result.warnings)
    assert "georef" not in result.metrics and "psnrDropDb" not in result.metrics
    assert not (tmp_path / "out" / "sog").exists()


def test_sh_bands_option_drops_bands(tmp_path: Path) -> None:
    inp = write_train_output(tmp_path / "train", small_scene(1200), cameras=0)
    result = run_stage("compress", str(inp), str(tmp_path / "out"), {**FAST, "shBands": 0})
    assert result.metrics["shBands"] == 0 and "shPaletteSize" not in result.metrics
    assert "shN" not in json.loads((tmp_path / "out" / "sog" / "meta.json").read_text())


def _bad(tmp_path: Path, data: bytes, match: str) -> None:
    inp = tmp_path / "train"
    inp.mkdir()
    (inp / "splats.ply").write_bytes(data)
    with pytest.raises(BadInputError, match=match) as err:
        run_stage("compress", str(inp), str(tmp_path / "out"))
    assert err.value.exit_code == 2
    assert not (tmp_path / "out" / "scene.sog").exists()


def test_missing_field_names_it(tmp_path: Path) -> None:
    text = ply_bytes(small_scene(10, sh_degree=0)).replace(b"property float rot_3\n", b"property float other\n")
    _bad(tmp_path, text, "rot_3")


def test_empty_scene_is_bad_input(tmp_path: Path) -> None:
    _bad(tmp_path, ply_bytes(small_scene(10, sh_degree=0).subset(np.zeros(10, bool))), "no splats")


def test_point_cloud_is_not_a_splat_scene(tmp_path: Path) -> None:
    header = (b"ply\nformat ascii 1.0\nelement vertex 1\n"
              b"property float x\nproperty float y\nproperty float z\nend_header\n")
    _bad(tmp_path, header + b"0 0 0\n", "not a 3DGS scene")


def test_garbage_is_not_a_ply(tmp_path: Path) -> None:
    _bad(tmp_path, b"\x89PNG\r\n", "not a readable PLY")


def test_missing_ply_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(BadInputError, match=r"splats\.ply"):
        run_stage("compress", str(tmp_path / "train"), str(tmp_path / "out"))


def test_failure_after_encoding_leaves_no_output(tmp_path: Path) -> None:
    inp = write_train_output(tmp_path / "train", small_scene(800, sh_degree=0), cameras=0)
    (inp / "cameras.json").write_text('{"cameras": [{"name": "a"}]}')
    with pytest.raises(BadInputError, match=r"cameras\.json"):
        run_stage("compress", str(inp), str(tmp_path / "out"), FAST)
    assert not any(p.suffix in (".sog", ".webp") for p in (tmp_path / "out").rglob("*"))


def test_s3_in_and_out(tmp_path: Path) -> None:
    inp = write_train_output(tmp_path / "train", small_scene(1000, sh_degree=1), cameras=1)
    with moto_s3() as endpoint, s3_environment(endpoint):
        s3_client().create_bucket(Bucket="runs")
        S3Store("s3://runs/r1/train").upload_dir(inp)
        result = run_stage("compress", "s3://runs/r1/train", "s3://runs/r1/compress", FAST)
        keys = S3Store("s3://runs/r1/compress").list()
    assert {"scene.sog", "sog/meta.json", "result.json"} <= set(keys)
    assert result.outputs["sog"] == "s3://runs/r1/compress/scene.sog"
    assert result.metrics["georef"] == GEOREF and result.metrics["qualityViews"] == 1


def test_quality_scores_identical_and_perturbed_scenes() -> None:
    from spaceport.stages.compress.synthetic import orbit_cameras_json
    from spaceport.stages.train.render import Camera, render

    scene = small_scene(400, sh_degree=2)
    view = Camera.from_json(json.loads(orbit_cameras_json(1, width=40, height=30))["cameras"][0])
    image = render(scene, view)
    assert image.shape == (30, 40, 3) and image.max() > 0.1
    moved = small_scene(400, sh_degree=2)
    moved.sh0[:] += 0.2
    assert quality.psnr(image, image) == float("inf")
    assert quality.psnr(render(moved, view), image) < 40
    assert quality.ssim(image, image) == pytest.approx(1.0)
    assert quality.scaled(view, 20).width == 20 and quality.scaled(view, 80) is view


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a node without CUDA")
def test_cuda_without_a_device_is_bad_input(tmp_path: Path) -> None:
    inp = write_train_output(tmp_path / "train", small_scene(500, sh_degree=1), cameras=0)
    with pytest.raises(BadInputError, match="device"):
        run_stage("compress", str(inp), str(tmp_path / "out"), {"device": "cuda"})

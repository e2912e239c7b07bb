"""Our SOG v2 / SOGS v1 files, decoded by @playcanvas/splat-transform 3.7.0 and by our readers, against
the input with bounds from the format (never bytes: k-means and ordering are free to change)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spaceport.api import CompressOptions
from spaceport.splats import GaussianScene
from spaceport.stages.compress import attributes as attr
from spaceport.stages.compress.pipeline import Encoded, encode_scene
from spaceport.stages.compress.sog import bundle, decode_v2, read_v2
from spaceport.stages.compress.sogs_v1 import decode_v1, kept_splats, read_v1
from tests.compress.helpers import (
    GEOREF,
    check_decoded_sog,
    match,
    rotation_angle_deg,
    small_scene,
    splat_transform_decode,
)


@pytest.fixture(scope="module")
def scene() -> GaussianScene:
    return small_scene(2500)


@pytest.fixture(scope="module")
def encoded(scene: GaussianScene) -> Encoded:
    options = CompressOptions(formats=["sog", "sogs-v1"], ordering="auto", kmeans_iterations=5)
    return encode_scene(scene, options, extra={"spaceport": {"georef": GEOREF}})


@pytest.fixture(scope="module")
def written(encoded: Encoded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sog")
    (root / "scene.sog").write_bytes(bundle(encoded.sog_files))
    for folder, files in (("sog", encoded.sog_files), ("sogs-v1", encoded.v1_files)):
        (root / folder).mkdir()
        assert files is not None
        for name, data in files.items():
            (root / folder / name).write_bytes(data)
    return root


def check_v2_against_input(decoded: GaussianScene, scene: GaussianScene, meta: dict) -> None:
    assert len(check_decoded_sog(decoded, scene, meta)) == scene.count


def test_bundle_is_a_stored_zip_with_meta_last(written: Path) -> None:
    with zipfile.ZipFile(written / "scene.sog") as z:
        infos = z.infolist()
    assert infos[-1].filename == "meta.json"
    assert all(i.compress_type == zipfile.ZIP_STORED and "/" not in i.filename for i in infos)
    meta = json.loads((written / "sog" / "meta.json").read_text())
    assert meta["version"] == 2 and meta["count"] == 2500 and meta["shN"]["bands"] == 3
    assert meta["spaceport"]["georef"] == GEOREF


def test_splat_transform_reads_the_bundle_like_we_do(written: Path, scene: GaussianScene, tmp_path: Path) -> None:
    theirs = splat_transform_decode(written / "scene.sog", tmp_path)
    ours, meta = read_v2(written / "scene.sog")
    assert theirs.count == ours.count == scene.count and theirs.sh_degree == 3
    for name in ("means", "scales", "sh0", "shN"):
        np.testing.assert_allclose(getattr(theirs, name), getattr(ours, name), rtol=1e-5, atol=1e-5)
    assert rotation_angle_deg(theirs.quats, ours.quats).max() < 0.01
    # splat-transform clamps logits at 1e-6; compare in linear opacity
    np.testing.assert_allclose(attr.sigmoid(theirs.opacities), attr.sigmoid(ours.opacities), atol=1e-5)
    check_v2_against_input(theirs, scene, meta)


def test_splat_transform_reads_unbundled_meta_json(written: Path, scene: GaussianScene, tmp_path: Path) -> None:
    theirs = splat_transform_decode(written / "sog" / "meta.json", tmp_path)
    check_v2_against_input(theirs, scene, json.loads((written / "sog" / "meta.json").read_text()))


def test_splat_transform_reads_sogs_v1(written: Path, scene: GaussianScene, tmp_path: Path) -> None:
    theirs = splat_transform_decode(written / "sogs-v1" / "meta.json", tmp_path)
    ours, meta = read_v1(written / "sogs-v1")
    side = int(np.sqrt(scene.count))
    assert theirs.count == ours.count == side * side
    for name in ("means", "scales", "sh0", "opacities", "shN"):
        np.testing.assert_allclose(getattr(theirs, name), getattr(ours, name), rtol=1e-5, atol=1e-5)
    idx = match(theirs, scene)
    assert set(idx.tolist()) == set(kept_splats(scene).tolist())  # the lowest-opacity splats went
    ref = scene.subset(idx)
    s_step = (np.asarray(meta["scales"]["maxs"]) - np.asarray(meta["scales"]["mins"])) / 255
    assert np.all(np.abs(theirs.scales - ref.scales) <= s_step / 2 + 1e-5)
    c_step = (np.asarray(meta["sh0"]["maxs"]) - np.asarray(meta["sh0"]["mins"])) / 255
    assert np.all(np.abs(theirs.sh0 - np.clip(ref.sh0, -3, 3)) <= c_step[:3] / 2 + 1e-5)
    assert np.all(np.abs(theirs.opacities - ref.opacities) <= c_step[3] / 2 + 1e-5)
    assert rotation_angle_deg(ref.quats, theirs.quats).max() < 1.2


def test_our_readers_decode_what_we_wrote(encoded: Encoded, scene: GaussianScene) -> None:
    decoded, meta = decode_v2(encoded.sog_files)
    check_v2_against_input(decoded, scene, meta)
    assert encoded.v1_files is not None
    v1, _ = decode_v1(encoded.v1_files)
    assert v1.count == int(np.sqrt(scene.count)) ** 2


def test_dropping_bands_and_degree_zero(scene: GaussianScene, tmp_path: Path) -> None:
    from spaceport.stages.compress.pipeline import keep_bands

    one = keep_bands(scene, 1)
    files = encode_scene(one, CompressOptions(kmeans_iterations=2, quality_views=0)).sog_files
    (tmp_path / "one.sog").write_bytes(bundle(files))
    theirs = splat_transform_decode(tmp_path / "one.sog", tmp_path)
    assert theirs.sh_degree == 1 and json.loads(files["meta.json"])["shN"]["bands"] == 1
    none = encode_scene(keep_bands(scene, 0), CompressOptions(quality_views=0)).sog_files
    assert "shN" not in json.loads(none["meta.json"]) and "shN_labels.webp" not in none
    decoded, _ = decode_v2(none)
    assert decoded.sh_degree == 0


def test_the_rendering_model_travels_from_the_ply_to_the_sog_and_splat_transform_reads_it(
        scene: GaussianScene, tmp_path: Path) -> None:
    """Splats trained in gsplat's antialiased mode say so in the PLY (``SplatRenderMode: mip``) and in the
    SOG's meta.json (``model``); splat-transform reads both, so a viewer built on it renders them with
    the same 2D filter. Classic splats carry no tag (splat-transform's own output leaves it out too)."""
    from spaceport.splats import read_ply, write_ply
    from spaceport.stages.compress.pipeline import keep_bands

    classic = keep_bands(scene, 0).subset(np.arange(600))
    aa = GaussianScene(classic.means, classic.scales, classic.quats, classic.opacities, classic.sh0, classic.shN,
                       model="antialiased")
    write_ply(aa, tmp_path / "aa.ply")
    assert b"comment SplatRenderMode: mip\n" in (tmp_path / "aa.ply").read_bytes()[:400]
    assert read_ply(tmp_path / "aa.ply").model == "antialiased"
    # splat-transform reads our comment into its data model and writes it back in its own PLY
    theirs = splat_transform_decode(tmp_path / "aa.ply", tmp_path)
    assert theirs.model == "antialiased"
    files = encode_scene(aa, CompressOptions(quality_views=0)).sog_files
    assert json.loads(files["meta.json"])["model"] == "antialiased"
    (tmp_path / "aa.sog").write_bytes(bundle(files))
    assert decode_v2(files)[0].model == "antialiased"
    assert splat_transform_decode(tmp_path / "aa.sog", tmp_path).model == "antialiased"
    plain = encode_scene(classic, CompressOptions(quality_views=0)).sog_files
    assert "model" not in json.loads(plain["meta.json"])
    (tmp_path / "plain.sog").write_bytes(bundle(plain))
    assert splat_transform_decode(tmp_path / "plain.sog", tmp_path).model == "default"

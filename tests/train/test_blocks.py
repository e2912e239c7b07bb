"""Partitioned training: the blocks' plan, one block's share of the model, and the merge under the stage contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spaceport.contract import BadInputError, StagePart
from spaceport.splats import read_ply
from spaceport.stages.runner import run_stage
from spaceport.stages.train.partition import plan
from spaceport.storage import LocalStore
from tests.train.fixtures import write_sfm_output

FAST = {"iterations": 120, "densifyFrom": 20, "densifyEvery": 20, "densifyUntil": 80, "shDegreeInterval": 40,
        "holdoutEvery": 4, "maxGaussians": 2000}


def survey(rows: int = 6, cols: int = 8, seed: int = 0) -> np.ndarray:
    """Camera centres of a lawnmower survey over a tilted plane (the model's frame is not the ground's)."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(cols) * 10.0, np.arange(rows) * 8.0)
    flat = np.stack([u.ravel(), v.ravel(), np.full(u.size, 40.0)], 1) + rng.normal(0, 0.5, (u.size, 3))
    angle = 0.4
    tilt = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    return flat @ tilt.T + [100.0, -50.0, 7.0]


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_every_point_lies_in_exactly_one_core_and_blocks_hold_as_many_cameras(count: int) -> None:
    centres = survey()
    partition = plan(centres, count, 0.25)
    assert len(partition.blocks) == count
    rng = np.random.default_rng(1)
    points = centres.mean(0) + rng.normal(0, 60, (5000, 3))  # also far outside the survey
    inside = np.stack([partition.in_core(b.index, points) for b in partition.blocks])
    assert (inside.sum(0) == 1).all(), "cores tile space: no point in none or in two"
    assert (partition.core_of(points) == inside.argmax(0)).all()
    per_block = [int(partition.in_core(b.index, centres).sum()) for b in partition.blocks]
    assert sum(per_block) == len(centres) and max(per_block) - min(per_block) <= len(centres) // count // 2 + 2
    for b in partition.blocks:
        widened = partition.in_region(b.index, points)
        assert widened[inside[b.index]].all(), "the region holds the core"
        assert widened.sum() > inside[b.index].sum(), "and more: the overlap"
        assert np.isinf(b.core).any() and (np.isinf(b.core) == np.isinf(b.region)).all(), \
            "outer sides stay open, inner ones widen"
    again = plan(centres.copy(), count, 0.25)
    assert all((a.core == b.core).all() and (a.region == b.region).all()
               for a, b in zip(partition.blocks, again.blocks, strict=True)), "every Pod plans the same blocks"


def test_the_overlap_widens_by_its_share_of_the_block() -> None:
    centres = survey()
    none, wide = plan(centres, 2, 0.0), plan(centres, 2, 0.5)
    (cut,) = [e for e in none.blocks[0].core.flatten() if np.isfinite(e)]
    assert (none.blocks[0].region == none.blocks[0].core).all()
    (edge,) = [e for e in wide.blocks[0].region.flatten() if np.isfinite(e)]
    members = none.plane(centres)[none.in_core(0, centres)]
    axis = int(np.argmax(np.isfinite(none.blocks[0].core).any(1)))
    assert edge == pytest.approx(cut + 0.5 * np.ptp(members[:, axis]))


def test_a_photo_from_outside_that_looks_into_a_block_trains_it() -> None:
    centres = survey()
    partition = plan(centres, 4, 0.1)
    points = np.concatenate([centres[partition.in_core(0, centres)] - [0, 0, 40]] * 3)
    inside = np.flatnonzero(partition.in_region(0, points))
    outside_camera = int(np.flatnonzero(~partition.in_region(0, centres))[0])
    seen = [np.array([], np.int64) for _ in centres]
    seen[outside_camera] = inside[:10]
    views = partition.views_of(0, centres, seen, points)
    assert views[outside_camera] and views[partition.in_region(0, centres)].all()
    assert views.sum() == partition.in_region(0, centres).sum() + 1


def test_too_many_blocks_for_the_photos_is_a_clear_error() -> None:
    with pytest.raises(BadInputError, match=r"train\.blocks: 30 blocks need at least 60 registered photos"):
        plan(survey(), 30, 0.25)


@pytest.fixture(scope="module")
def sfm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sfm")
    write_sfm_output(root, n_views=16, georef=True, ground=True)
    return root


def test_blocks_train_apart_and_merge_into_one_training_folder(sfm: Path, tmp_path: Path) -> None:
    options = {**FAST, "blocks": 2}
    results = [run_stage("train", str(sfm), str(tmp_path), options, part=StagePart(2, i)) for i in range(2)]
    assert [r.metrics["block"] for r in results] == [0, 1]
    merged = run_stage("train", str(sfm), str(tmp_path), options, part=StagePart(2))
    m = merged.metrics
    assert m["blocks"] == 2 and m["evalViews"] == "heldOut" and m["steps"] == 240
    assert merged.typed_metrics().unknown == []
    # the merged scene renders the held-out photos far better than the blocks' seeds did (how well, against a single
    # training, is bench/blocks.py's question)
    assert m["psnr"] > max(r.metrics["initialPsnr"] for r in results) + 5, m
    # the merge kept each block's Gaussians in its own core: as many as the blocks' PLYs hold there
    from spaceport.api import TrainOptions
    from spaceport.stages.train.blocks import model_of, partition_of

    model = model_of(LocalStore(sfm), tmp_path / "scratch", TrainOptions.model_validate(options))
    partition = partition_of(model, 2, 0.25)
    kept = [int(partition.in_core(i, read_ply(tmp_path / "blocks" / str(i) / "splats.ply").means).sum())
            for i in range(2)]
    assert read_ply(tmp_path / "splats.ply").count == m["gaussians"] == sum(kept)
    # what a single training writes: every camera, the held-out photos, georef
    cameras = json.loads((tmp_path / "cameras.json").read_text())["cameras"]
    assert len(cameras) == 16 and [c["heldOut"] for c in cameras] == [i % 4 == 0 for i in range(16)]
    assert sorted(p.name for p in (tmp_path / "holdout").iterdir()) == sorted(
        f"{c['name']}.png" for c in cameras if c["heldOut"])
    assert (tmp_path / "georef.json").read_bytes() == (sfm / "georef.json").read_bytes()
    # no block trained on a photo the merge measures with
    held = {c["name"] for c in cameras if c["heldOut"]}
    for i in range(2):
        block_cameras = json.loads((tmp_path / "blocks" / str(i) / "cameras.json").read_text())["cameras"]
        assert {c["name"] for c in block_cameras if not c["heldOut"]}.isdisjoint(held)
    # done is done: the same merge again returns the stored result
    assert run_stage("train", str(sfm), str(tmp_path), options, part=StagePart(2)).fingerprint == merged.fingerprint


def test_a_merge_refuses_missing_blocks_and_blocks_of_other_options(sfm: Path, tmp_path: Path) -> None:
    options = {**FAST, "iterations": 30, "blocks": 2}
    run_stage("train", str(sfm), str(tmp_path), options, part=StagePart(2, 0))
    with pytest.raises(BadInputError, match=r"block\(s\) 1 have no result.json under .*blocks; train them first"):
        run_stage("train", str(sfm), str(tmp_path), options, part=StagePart(2))
    run_stage("train", str(sfm), str(tmp_path), {**options, "iterations": 40}, part=StagePart(2, 1))
    with pytest.raises(BadInputError, match=r"block\(s\) 1 under .* were trained from another SfM model or other"):
        run_stage("train", str(sfm), str(tmp_path), options, part=StagePart(2))
    assert not (tmp_path / "result.json").exists() and not (tmp_path / "splats.ply").exists()


def test_parts_are_checked_where_they_are_given(sfm: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"block index 2 is outside 0\.\.1"):
        StagePart(2, 2)
    with pytest.raises(BadInputError, match="needs 2 blocks or more"):
        StagePart(1, 0)
    with pytest.raises(BadInputError, match="only the train stage is trained in blocks, not compress"):
        run_stage("compress", str(sfm), str(tmp_path), {}, part=StagePart(2, 0))



def test_the_merged_scene_keeps_the_cap_with_its_most_opaque_gaussians() -> None:
    from spaceport.stages.train.blocks import within_cap
    from tests.train.fixtures import truth_scene

    scene = truth_scene(50, 0)
    capped = within_cap(scene, 20)
    assert capped.count == 20 and within_cap(scene, 50) is scene
    assert capped.opacities.min() >= np.sort(scene.opacities)[-20]
    assert np.isin(capped.means, scene.means).all(axis=1).all()  # kept as they were, in their order

"""The streamed SOG (lod-meta.json): our levels of detail, and the stage's files read back by splat-transform 3.7.0
level by level, chunk by chunk, against what was encoded with the codec's bounds (as test_formats does)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spaceport.splats import GaussianScene, read_ply
from spaceport.stages.compress import attributes as attr
from spaceport.stages.compress.decimate import areas, auto_levels, lod_levels, merge, rotations
from spaceport.stages.compress.pipeline import keep_bands
from spaceport.stages.runner import run_stage
from tests.compress.helpers import (
    SPLAT_TRANSFORM,
    check_decoded_sog,
    small_scene,
    write_train_output,
)

LEVELS = 3
# The threshold lowered so that a small scene is streamed, and chunks small enough that each level has several.
OPTIONS = {"kmeansIterations": 3, "qualityViews": 0, "streamedMinSplats": 3000, "lodLevels": LEVELS,
           "lodChunkSplats": 1024, "lodChunkExtent": 12.0, "lodChunkMinSplats": 256}


def one_splat(mean: tuple[float, float, float], scale: float, opacity: float, colour: float) -> GaussianScene:
    return GaussianScene(np.array([mean], np.float32), np.full((1, 3), np.log(scale), np.float32),
                         np.array([[1, 0, 0, 0]], np.float32), attr.logit(np.array([opacity])).astype(np.float32),
                         np.full((1, 3), colour, np.float32), np.full((1, 3, 3), colour, np.float32))


def test_a_merged_pair_keeps_the_pairs_moments() -> None:
    from spaceport.splats import concat

    pair = concat(one_splat((0, 0, 0), 0.1, 0.5, 1.0), one_splat((0.4, 0, 0), 0.1, 0.5, -1.0))
    merged = merge(pair, np.array([0]), np.array([1]))
    assert merged.count == 1
    np.testing.assert_allclose(merged.means[0], [0.2, 0, 0], atol=1e-6)  # equal weights: the midpoint
    rot = rotations(merged.quats)[0]
    cov = rot @ np.diag(np.exp(2 * merged.scales[0].astype(np.float64))) @ rot.T
    # law of total variance: each splat's 0.01 plus the spread of the centres (0.2²) along x
    np.testing.assert_allclose(np.diag(cov), [0.01 + 0.04, 0.01, 0.01], rtol=1e-4)
    np.testing.assert_allclose(merged.sh0, 0.0, atol=1e-6)
    np.testing.assert_allclose(merged.shN, 0.0, atol=1e-6)
    # the ink (area x opacity) is kept: two splats' worth over the merged splat's larger area
    ink = (areas(pair.scales) * 0.5).sum()
    assert attr.sigmoid(merged.opacities[0]) == pytest.approx(ink / areas(merged.scales)[0], rel=1e-4)


def test_each_level_halves_and_keeps_the_scene() -> None:
    scene = small_scene(3000)
    levels = lod_levels(scene, 4)
    assert [s.count for s in levels] == [3000, 1500, 750, 375]
    w0 = areas(scene.scales) * attr.sigmoid(scene.opacities)
    for level in levels[1:]:
        assert all(np.isfinite(getattr(level, f)).all() for f in ("means", "scales", "quats", "opacities", "sh0"))
        # merged centres stay inside the scene, and the ink-weighted colour is the scene's
        assert np.all(level.means >= scene.means.min(0) - 1e-4) and np.all(level.means <= scene.means.max(0) + 1e-4)
        w = areas(level.scales) * attr.sigmoid(level.opacities)
        before = (w0[:, None] * scene.sh0).sum(0) / w0.sum()
        after = (w[:, None] * level.sh0).sum(0) / w.sum()
        np.testing.assert_allclose(after, before, atol=0.05)
    assert auto_levels(100) == 2 and auto_levels(1_000_000) == 3 and auto_levels(10_000_000) == 7


def splat_transform(*args: str) -> str:
    proc = subprocess.run([str(SPLAT_TRANSFORM), "-g", "cpu", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"splat-transform {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node] if "lods" in node else [leaf for child in node["children"] for leaf in leaves(child)]


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GaussianScene, Any]:
    if not SPLAT_TRANSFORM.exists():
        pytest.fail(f"{SPLAT_TRANSFORM} missing: run `npm ci` in the repository root")
    tmp = tmp_path_factory.mktemp("streamed")
    scene = small_scene(4000)
    inp = write_train_output(tmp / "train", scene, cameras=2)
    result = run_stage("compress", str(inp), str(tmp / "out"), {**OPTIONS, "formats": ["sog"]})
    return tmp / "out", scene, result


def test_a_scene_above_the_threshold_is_also_written_streamed(streamed_run: tuple[Path, GaussianScene, Any]) -> None:
    out, _, result = streamed_run
    m = result.metrics
    assert m["sceneFormat"] == "sog-streamed" and m["lodCounts"] == [4000, 2000, 1000]
    assert result.outputs["sogStreamed"].endswith("lod/lod-meta.json") and (out / "scene.sog").is_file()
    assert result.typed_metrics().unknown == []
    meta = json.loads((out / "lod" / "lod-meta.json").read_text())
    assert meta["version"] == 1 and meta["lodLevels"] == LEVELS and meta["counts"] == [4000, 2000, 1000]
    assert meta["count"] == 7000 and len(meta["filenames"]) == m["lodChunks"] > LEVELS
    assert meta["spaceport"]["georef"]["frame"] == "ENU"
    files = sorted(p for p in (out / "lod").rglob("*") if p.is_file())
    assert m["streamedBytes"] == sum(p.stat().st_size for p in files)
    assert all((out / "lod" / name).is_file() for name in meta["filenames"])
    found = leaves(meta["tree"])
    assert len(found) == m["lodLeaves"] > 1
    for level in range(LEVELS):
        units = {lod["file"] for leaf in found for key, lod in leaf["lods"].items() if int(key) == level}
        assert sum(leaf["lods"].get(str(level), {}).get("count", 0) for leaf in found) == meta["counts"][level]
        for unit in units:
            unit_meta = json.loads((out / "lod" / meta["filenames"][unit]).read_text())
            parts = sorted((lod["offset"], lod["count"]) for leaf in found
                           for lod in leaf["lods"].values() if lod["file"] == unit)
            # a unit's leaves follow one another, and fill it exactly
            assert [o for o, _ in parts] == list(np.cumsum([0] + [c for _, c in parts])[:-1])
            assert sum(c for _, c in parts) == unit_meta["count"] <= OPTIONS["lodChunkSplats"] * 2
    # the viewer page streams the index
    page = (out / "index.html").read_text()
    assert '"content": "./lod/lod-meta.json"' in page
    assert json.loads((out / "metrics.json").read_text())["scene"] == "lod/lod-meta.json"
    # the operator's status lists what the stage and its publish step wrote
    from tests.operator.test_real_results import status_from

    outputs = status_from({"compress": result}).outputs
    assert outputs["sogStreamed"] == result.outputs["sogStreamed"] and outputs["viewer"].endswith("index.html")
    text = splat_transform(str(out / "lod" / "lod-meta.json"), "--info", "json", "null")
    info = json.loads(text[text.index("{"):text.rindex("}") + 1])
    assert info["format"] == "lod" and info["lodCounts"] == [4000, 2000, 1000]


def test_splat_transform_reads_every_level_of_the_streamed_sog(streamed_run: tuple[Path, GaussianScene, Any],
                                                              tmp_path: Path) -> None:
    out, scene, _ = streamed_run
    meta = json.loads((out / "lod" / "lod-meta.json").read_text())
    levels = lod_levels(keep_bands(scene, 3), LEVELS)  # what the stage encoded (the decimation is deterministic)
    for level in range(LEVELS):
        ply = tmp_path / f"level{level}.ply"
        # all levels (splat-transform writes level 0 of a multi-level source to a PLY), then each selected one
        splat_transform("-q", "-w", *([] if level == 0 else ["-L", str(level)]), str(out / "lod" / "lod-meta.json"),
                        str(ply))
        decoded = read_ply(ply)
        assert decoded.count == meta["counts"][level]
        # splat-transform reads a level's units in file order, each unit in its own texel order
        units = sorted({lod["file"] for leaf in leaves(meta["tree"]) for key, lod in leaf["lods"].items()
                        if int(key) == level})
        start = 0
        for unit in units:
            unit_meta = json.loads((out / "lod" / meta["filenames"][unit]).read_text())
            part = decoded.subset(np.arange(start, start + unit_meta["count"]))
            check_decoded_sog(part, levels[level], unit_meta)  # a chunk against its level
            start += unit_meta["count"]
        assert start == decoded.count
    np.testing.assert_allclose(np.sort(read_ply(tmp_path / "level0.ply").means, 0), np.sort(scene.means, 0),
                               atol=0.02)


def test_each_leaf_bound_holds_its_splats(streamed_run: tuple[Path, GaussianScene, Any]) -> None:
    out, scene, _ = streamed_run
    meta = json.loads((out / "lod" / "lod-meta.json").read_text())
    levels = lod_levels(keep_bands(scene, 3), LEVELS)
    from spaceport.stages.compress.sog import read_v2

    for leaf in leaves(meta["tree"]):
        lo, hi = np.asarray(leaf["bound"]["min"]), np.asarray(leaf["bound"]["max"])
        for key, lod in leaf["lods"].items():
            unit, _ = read_v2(out / "lod" / meta["filenames"][lod["file"]])
            centres = unit.means[lod["offset"]:lod["offset"] + lod["count"]]
            assert np.all(centres >= lo - 1e-3) and np.all(centres <= hi + 1e-3), key
        assert np.all(hi - lo > 0)
    assert len(levels) == LEVELS


def test_a_scene_at_the_threshold_is_not_streamed(tmp_path: Path) -> None:
    inp = write_train_output(tmp_path / "train", small_scene(3000), cameras=0, georef=False)
    result = run_stage("compress", str(inp), str(tmp_path / "out"), {**OPTIONS, "formats": ["sog"]})
    assert result.metrics["sceneFormat"] == "sog" and "sogStreamed" not in result.outputs
    assert not (tmp_path / "out" / "lod").exists()
    assert '"content": "./scene.sog"' in (tmp_path / "out" / "index.html").read_text()

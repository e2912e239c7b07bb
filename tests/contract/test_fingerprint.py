"""A stage result is valid only for its inputs: result.json carries a fingerprint of options and upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spaceport.contract import ATTEMPT_FILE, EXIT_BAD_INPUT, RESULT_FILE, StageContext, StageOutput, StaleOutputError
from spaceport.stages.runner import STAGE_FUNCTIONS, run_stage
from tests.compress.helpers import small_scene, write_train_output

CALLS: list[tuple[str, dict]] = []


def recording_stage(ctx: StageContext) -> StageOutput:
    """Records the options it ran with and writes one file, as a real stage would."""
    options = ctx.options.model_dump(by_alias=True)
    CALLS.append((ctx.stage, options))
    ctx.output.write_text("made.json", json.dumps(options))
    return StageOutput(metrics={"ran": len(CALLS)})


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    for stage in ("sfm", "train", "compress"):
        monkeypatch.setitem(STAGE_FUNCTIONS, stage, f"{__name__}:recording_stage")
    CALLS.clear()
    return CALLS


def _photos(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x" * 10)
    return photos


def test_other_options_are_refused_and_the_old_result_kept(tmp_path: Path, recording: list) -> None:
    photos, out = _photos(tmp_path), tmp_path / "out"
    first = run_stage("sfm", str(photos), str(out), {"maxImageSize": 1600})
    assert first.fingerprint and first.fingerprint_parts.keys() == {"options", "upstream"}
    stored = (out / RESULT_FILE).read_text()
    with pytest.raises(StaleOutputError, match=r"result.json made from other options .*write to a fresh output"):
        run_stage("sfm", str(photos), str(out), {"maxImageSize": 800})
    assert len(recording) == 1 and (out / RESULT_FILE).read_text() == stored
    assert run_stage("sfm", str(photos), str(out), {"maxImageSize": 1600}) == first  # same inputs: reused


def test_changed_photos_are_refused(tmp_path: Path, recording: list) -> None:
    photos, out = _photos(tmp_path), tmp_path / "out"
    run_stage("sfm", str(photos), str(out), {})
    (photos / "b.jpg").write_bytes(b"y" * 10)
    with pytest.raises(StaleOutputError, match=r"other input \(upstream result or photos\)"):
        run_stage("sfm", str(photos), str(out), {})
    assert len(recording) == 1


def test_a_rerun_upstream_stage_invalidates_the_downstream_result(tmp_path: Path, recording: list) -> None:
    photos, sfm, train = _photos(tmp_path), tmp_path / "sfm", tmp_path / "train"
    run_stage("sfm", str(photos), str(sfm), {})
    run_stage("train", str(sfm), str(train), {})
    # sfm run again (same options) into a fresh folder that takes the old one's place: new files, new result.
    (sfm / RESULT_FILE).rename(tmp_path / "old-result.json")
    (sfm / ATTEMPT_FILE).unlink()
    run_stage("sfm", str(photos), str(sfm), {})
    with pytest.raises(StaleOutputError, match=r"train result\.json made from other input"):
        run_stage("train", str(sfm), str(train), {})
    assert [s for s, _ in recording] == ["sfm", "train", "sfm"]


def test_an_unfinished_attempt_at_other_options_is_not_continued(tmp_path: Path, recording: list,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    photos, out = _photos(tmp_path), tmp_path / "out"
    monkeypatch.setitem(STAGE_FUNCTIONS, "sfm", f"{__name__}:crashing_stage")
    with pytest.raises(RuntimeError):
        run_stage("sfm", str(photos), str(out), {"maxImageSize": 1600})
    monkeypatch.setitem(STAGE_FUNCTIONS, "sfm", f"{__name__}:recording_stage")
    with pytest.raises(StaleOutputError, match=r"unfinished sfm attempt at other options"):
        run_stage("sfm", str(photos), str(out), {"maxImageSize": 800})
    assert (out / "partial.bin").read_bytes() == b"half"  # kept, not overwritten
    run_stage("sfm", str(photos), str(out), {"maxImageSize": 1600})  # the same inputs continue
    assert len(recording) == 1


def crashing_stage(ctx: StageContext) -> StageOutput:
    ctx.output.write_bytes("partial.bin", b"half")
    raise RuntimeError("node lost")


def test_cli_compress_with_other_sh_bands_exits_2_and_keeps_the_first_result(tmp_path: Path) -> None:
    """The issue's report: `spaceport stage compress` with shBands 3, then 0 into the same output."""
    train = write_train_output(tmp_path / "train", small_scene(500), cameras=0)
    out = tmp_path / "compress"
    env = {**os.environ, "SPACEPORT_TERMINATION_LOG": str(tmp_path / "term")}

    def stage(sh_bands: int) -> subprocess.CompletedProcess[str]:
        config = json.dumps({"shBands": sh_bands, "kmeansIterations": 2, "formats": ["sog"], "qualityViews": 0})
        return subprocess.run([sys.executable, "-m", "spaceport.cli", "stage", "compress", "--input", str(train),
                               "--output", str(out), "--config", config],
                              capture_output=True, text=True, env=env, timeout=300)

    first = stage(3)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["metrics"]["shBands"] == 3
    sog = (out / "scene.sog").read_bytes()
    second = stage(0)
    assert second.returncode == EXIT_BAD_INPUT, second.stderr
    assert "made from other options" in second.stderr
    assert json.loads((tmp_path / "term").read_text())["reason"] == "StaleOutput"
    assert (out / "scene.sog").read_bytes() == sog
    assert json.loads((out / RESULT_FILE).read_text())["metrics"]["shBands"] == 3


def test_owner_record_is_claimed_once_and_checked(tmp_path: Path) -> None:
    from spaceport.contract import OWNER_FILE, OutputInUseError
    from spaceport.stages.runner import check_owner

    root = tmp_path / "out"
    check_owner(str(root), '{"namespace": "a", "name": "site", "uid": "1"}')
    check_owner(str(root), '{"namespace": "a", "name": "site", "uid": "2"}')  # re-created namesake: same owner
    assert json.loads((root / OWNER_FILE).read_text())["uid"] == "1"
    with pytest.raises(OutputInUseError, match=r"belongs to Reconstruction a/site \(uid 1"):
        check_owner(str(root), '{"namespace": "b", "name": "site", "uid": "3"}')

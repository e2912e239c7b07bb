"""`spaceport run`'s run folders: a result made from other inputs is never reused, and never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spaceport.contract import RESULT_FILE
from spaceport.local import run_pipeline
from spaceport.stages.runner import STAGE_FUNCTIONS
from tests.contract.test_fingerprint import CALLS


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    for stage in ("sfm", "train", "compress"):
        monkeypatch.setitem(STAGE_FUNCTIONS, stage, "tests.contract.test_fingerprint:recording_stage")
    CALLS.clear()
    return CALLS


def test_changed_photos_start_a_fresh_run_folder(tmp_path: Path, recording: list) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    first = run_pipeline(photos, out, {"preset": "draft"})
    assert first.number == 1 and len(recording) == 3
    kept = {s: (out / "runs/1" / s / RESULT_FILE).read_text() for s in ("sfm", "train", "compress")}

    (photos / "b.jpg").write_bytes(b"y")  # same options, other photos: run 1's results do not describe them
    second = run_pipeline(photos, out, {"preset": "draft"})
    assert second.number == 2 and len(recording) == 6 and second.skipped == set()
    assert "run 1:" in second.replaced[0] and "photos" in second.replaced[0]
    assert json.loads((out / "runs/2/run.json").read_text())["replaces"] == 1
    assert {s: (out / "runs/1" / s / RESULT_FILE).read_text() for s in kept} == kept

    third = run_pipeline(photos, out, {"preset": "draft"})  # nothing changed since: run 2 is finished
    assert third.number == 2 and third.skipped == {"sfm", "train", "compress"} and len(recording) == 6

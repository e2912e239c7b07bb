"""The stage contract: progress.json throttling, result.json, termination message, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spaceport.contract import (
    EXIT_BAD_INPUT,
    PROGRESS_FILE,
    RESULT_FILE,
    TERMINATION_LIMIT,
    BadInputError,
    ProgressRecord,
    ProgressReporter,
    StageContext,
    StageOutput,
    StageResult,
)
from spaceport.stages.runner import STAGE_FUNCTIONS, parse_options, run_stage
from spaceport.storage import LocalStore


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_is_throttled_and_spans_map_onto_the_parent(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path), FakeClock()
    seen: list[ProgressRecord] = []
    reporter = ProgressReporter(store, seen.append, min_interval_s=2.0, clock=clock)
    reporter.update(0.1, "first")
    clock.t = 1.0
    reporter.update(0.2, "too soon")
    written = ProgressRecord.model_validate_json(store.read_text(PROGRESS_FILE))
    assert written.fraction == pytest.approx(0.1) and written.message == "first"
    clock.t = 3.0
    second_half = reporter.span(0.5, 1.0)
    second_half.update(0.5, "halfway through the second half")
    written = ProgressRecord.model_validate_json(store.read_text(PROGRESS_FILE))
    assert written.fraction == pytest.approx(0.75)
    assert written.eta_seconds == pytest.approx(3.0 * 0.25 / 0.75, rel=1e-3)
    assert [round(r.fraction, 2) for r in seen] == [0.1, 0.2, 0.75]  # listeners see every update


def test_progress_never_goes_backwards(tmp_path: Path) -> None:
    reporter = ProgressReporter(LocalStore(tmp_path), None, min_interval_s=0)
    reporter.update(0.6)
    reporter.span(0.0, 0.5).update(1.0)
    assert reporter.fraction == pytest.approx(0.6)


def test_termination_message_fits_kubernetes_limit() -> None:
    result = StageResult(stage="sfm", started_at="a", finished_at="b", duration_seconds=1.0,
                         metrics={"images": 3}, outputs={"x": "s3://b/" + "k" * 100},
                         warnings=[f"skipped corrupt file {'x' * 100}-{i}.jpg" for i in range(100)])
    text = result.termination_message()
    assert len(text.encode()) <= TERMINATION_LIMIT
    body = json.loads(text)
    assert body["metrics"] == {"images": 3} and "warnings" not in body


def test_bad_config_names_the_field() -> None:
    with pytest.raises(BadInputError, match=r"sfm.matching"):
        parse_options("sfm", {"matching": "psychic"})
    with pytest.raises(BadInputError, match=r"train.iterations"):
        parse_options("train", '{"iterations": 0}')
    with pytest.raises(BadInputError, match="unknown stage"):
        parse_options("paint", {})


CALLS: list[str] = []


def counting_stage(ctx: StageContext) -> StageOutput:
    """A stage for testing the runner itself: it records that it ran and lists its input."""
    CALLS.append(ctx.stage)
    ctx.progress.update(0.5, "half")
    return StageOutput(metrics={"files": len(ctx.input.list())}, outputs={"out": ctx.output.uri})


def test_completed_stage_is_not_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STAGE_FUNCTIONS, "sfm", f"{__name__}:counting_stage")
    CALLS.clear()
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    first = run_stage("sfm", str(photos), str(out), {})
    assert first.metrics == {"files": 1} and CALLS == ["sfm"]
    assert ProgressRecord.model_validate_json((out / PROGRESS_FILE).read_text()).fraction == 1.0
    before = (out / RESULT_FILE).read_text()
    again = run_stage("sfm", str(photos), str(out), {})
    assert again == first and CALLS == ["sfm"]
    assert (out / RESULT_FILE).read_text() == before


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spaceport.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_cli_exit_code_2_and_termination_message_on_bad_input(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli("stage", "sfm", "--input", str(empty), "--output", str(tmp_path / "o"),
                env={"SPACEPORT_TERMINATION_LOG": str(term)})
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    message = json.loads(term.read_text())
    assert message["reason"] == "BadInput" and "no images found under" in message["message"]
    assert not (tmp_path / "o" / RESULT_FILE).exists()


def test_cli_bad_config_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    proc = _cli("stage", "sfm", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                "--config", '{"maxImageSize": 1}', env={"SPACEPORT_TERMINATION_LOG": str(tmp_path / "t")})
    assert proc.returncode == EXIT_BAD_INPUT
    assert "sfm.maxImageSize" in proc.stderr


def test_cli_usage_error_is_not_confused_with_bad_input(tmp_path: Path) -> None:
    proc = _cli("stage", "sfm", env={})
    assert proc.returncode not in (0, EXIT_BAD_INPUT)


def test_unwritable_output_is_bad_input_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STAGE_FUNCTIONS, "sfm", f"{__name__}:counting_stage")
    CALLS.clear()
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the run folder should go")
    with pytest.raises(BadInputError, match="output: cannot write under"):
        run_stage("sfm", str(tmp_path), str(blocker / "1" / "sfm"), {})
    assert CALLS == [] and blocker.read_text() == "a file where the run folder should go"


def test_missing_output_bucket_is_bad_input_naming_it(s3_env: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STAGE_FUNCTIONS, "sfm", f"{__name__}:counting_stage")
    CALLS.clear()
    with pytest.raises(BadInputError, match="bucket 'no-such-output' does not exist"):
        run_stage("sfm", str(tmp_path), "s3://no-such-output/runs/1/sfm", {})
    assert CALLS == []

"""`spaceport run` end to end on a tiny synthetic flight: the summary, the viewer, resuming, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spaceport.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED
from spaceport.contract import StageResult
from tests.operator.test_real_results import status_from

SPACEPORT = [sys.executable, "-m", "spaceport.cli"]
TINY = {"sfm": {"maxImageSize": 240}, "train": {"iterations": 40, "maxGaussians": 20_000, "shDegree": 0},
        "compress": {"shBands": 0}}
"""Settings for a pipeline that finishes in well under a minute; quality is not what is tested here."""


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spaceport.synthetic import generate_flight

    out = tmp_path_factory.mktemp("flight") / "photos"
    generate_flight(out, n_images=12, width=240, height=180, seed=3)
    return out


def config_file(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def leftovers(folder: Path) -> list[Path]:
    """Half-written files: the atomic writers' temporaries."""
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


@pytest.mark.slow
def test_run_then_resume_skips_finished_stages(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # streamed whatever the size (the threshold is for scenes far larger than this one): the page streams it;
    # trained in two blocks, one after another, then merged (what the cluster runs as an Indexed Job and a merge)
    streamed = {**TINY, "train": {**TINY["train"], "blocks": 2},
                "compress": {**TINY["compress"], "streamed": "always", "lodLevels": 2}}
    argv = [*SPACEPORT, "run", str(photos), "--out", str(out), "--preset", "draft",
            "--config", str(config_file(tmp_path, streamed))]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=170)
    assert first.returncode == EXIT_OK, first.stderr[-3000:]
    compress = out / "runs" / "1" / "compress"
    for name in ("scene.sog", "lod/lod-meta.json", "index.html", "settings.json", "metrics.json", "index.js",
                 "result.json"):
        assert (compress / name).is_file(), name
    assert '"content": "./lod/lod-meta.json"' in (compress / "index.html").read_text()
    summary = first.stdout + first.stderr
    for row in ("Registered images", "Gaussians", "SOG size", "Compression ratio", "sfm time", "Viewer",
                "Streamed scene"):
        assert row in summary, row
    results = {s: (out / "runs" / "1" / s / "result.json").read_text() for s in ("sfm", "train", "compress")}
    assert json.loads(results["train"])["metrics"]["blocks"] == 2
    for block in ("0", "1"):
        assert json.loads((out / "runs" / "1" / "train" / "blocks" / block / "result.json").read_text())[
            "metrics"]["block"] == int(block)
    metrics = json.loads((compress / "metrics.json").read_text())["metrics"]
    assert metrics.get("registeredImages") and metrics.get("gaussians")
    # The operator's status code reads the names these real stages wrote (stage metrics -> status.metrics).
    status = status_from({s: StageResult.model_validate_json(text) for s, text in results.items()})
    assert None not in (status.metrics.images, status.metrics.registered_images, status.metrics.gaussians,
                        status.metrics.psnr, status.metrics.ssim, status.metrics.ply_bytes, status.metrics.sog_bytes,
                        status.metrics.compression_ratio)

    again = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    assert "done earlier" in again.stdout + again.stderr
    assert {s: (out / "runs" / "1" / s / "result.json").read_text() for s in results} == results
    assert not (out / "runs" / "2").exists()
    assert leftovers(out) == []


@pytest.mark.slow
def test_ctrl_c_leaves_whole_files_and_the_run_resumable(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([*SPACEPORT, "run", str(photos), "--out", str(out), "--preset", "draft",
                             "--config", str(config_file(tmp_path, TINY))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    interrupted = None
    deadline = time.monotonic() + 120
    while interrupted is None and time.monotonic() < deadline and proc.poll() is None:
        for stage in ("sfm", "train", "compress"):
            folder = out / "runs" / "1" / stage
            progress = folder / "progress.json"
            if progress.is_file() and not (folder / "result.json").exists():
                try:
                    fraction = json.loads(progress.read_text())["fraction"]
                except ValueError:
                    continue
                if 0 < fraction < 0.9:
                    interrupted = stage
                    break
        time.sleep(0.05)
    assert interrupted, f"no stage was seen running; exit {proc.poll()}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "run the same command to resume" in err.strip().splitlines()[-1]
    assert not (out / "runs" / "1" / interrupted / "result.json").exists()
    assert leftovers(out) == []


@pytest.mark.parametrize(("sig", "code", "what"), [(signal.SIGTERM, EXIT_TERMINATED, "stopped by SIGTERM"),
                                                   (signal.SIGINT, EXIT_INTERRUPTED, "interrupted")])
def test_a_stop_during_sfm_is_one_line_and_the_documented_code(photos: Path, tmp_path: Path, sig: int, code: int,
                                                                what: str) -> None:
    """pycolmap installs glog's SIGTERM handler, which printed a native stack trace and died with -15."""
    out = tmp_path / "out"
    proc = subprocess.Popen([*SPACEPORT, "run", str(photos), "--out", str(out), "--preset", "draft",
                             "--config", str(config_file(tmp_path, TINY))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress, deadline = out / "runs" / "1" / "sfm" / "progress.json", time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if 0.1 < json.loads(progress.read_text())["fraction"] < 0.9:  # inside pycolmap's extraction/matching
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before SfM could be stopped"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last == f"spaceport: {what}; finished stages are kept: run the same command to resume"
    assert "stack trace" not in err and "*** " not in err, err[-2000:]
    assert f"{code}" in subprocess.run([*SPACEPORT, "--help"], capture_output=True, text=True).stdout  # documented
    assert not (out / "runs" / "1" / "sfm" / "result.json").exists() and leftovers(out) == []


def test_sigterm_during_the_sfm_stage_writes_a_termination_message(photos: Path, tmp_path: Path) -> None:
    """What a Pod's deletion or eviction does to `spaceport stage sfm`: exit 143 and a termination message."""
    out, term = tmp_path / "sfm", tmp_path / "termination-log"
    proc = subprocess.Popen([*SPACEPORT, "stage", "sfm", "--input", str(photos), "--output", str(out),
                             "--config", json.dumps(TINY["sfm"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "SPACEPORT_TERMINATION_LOG": str(term)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if 0.1 < json.loads((out / "progress.json").read_text())["fraction"] < 0.9:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the stage ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_TERMINATED, err[-2000:]
    assert "stack trace" not in err and "*** " not in err, err[-2000:]
    assert json.loads(term.read_text()) == {"stage": "sfm", "reason": "Stopped", "message": "stopped by SIGTERM"}
    assert not (out / "result.json").exists() and leftovers(out) == []

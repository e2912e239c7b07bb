"""``train.device``: why CUDA is unusable, said at startup (the error path, run on a CPU machine by faking
what torch and the driver report)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spaceport.contract import BadInputError
from spaceport.stages.train import cuda_env
from spaceport.stages.train.stage import pick_device

PROPRIETARY = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Thu Jan 23 22:50:36 UTC 2025\n"
               "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
OPEN = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16)\n"
        "GCC version:  gcc version 13.3.0\n")


@pytest.fixture
def cuda_torch_without_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """torch as the stage image has it (a CUDA 13.0 build) on a node where it finds no usable device."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_device() -> None:
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 12080).\nmore text")

    monkeypatch.setattr(torch.cuda, "init", no_device)
    version_file = tmp_path / "version"
    monkeypatch.setattr(cuda_env, "DRIVER_VERSION_FILE", version_file)
    monkeypatch.setattr(cuda_env.driver_version, "__defaults__", (version_file,))
    return version_file


def test_driver_version_is_read_from_both_module_flavours(tmp_path: Path) -> None:
    path = tmp_path / "version"
    assert cuda_env.driver_version(path) is None  # no driver loaded
    path.write_text(PROPRIETARY)
    assert cuda_env.driver_version(path) == "570.86.15"
    path.write_text(OPEN)
    assert cuda_env.driver_version(path) == "580.65.06"


def test_required_driver_follows_the_cuda_major() -> None:
    assert cuda_env.required_driver("13.0") == "580.65.06"
    assert cuda_env.required_driver("12.8") == "525.60.13"
    assert cuda_env.required_driver(None) is None
    assert cuda_env.version_tuple("570.86.15") < cuda_env.version_tuple("580.65.06")


def test_cuda_with_a_driver_too_old_names_both_versions(cuda_torch_without_gpu: Path) -> None:
    cuda_torch_without_gpu.write_text(PROPRIETARY)
    with pytest.raises(BadInputError) as e:
        pick_device("cuda")
    message = str(e.value)
    assert "train.device" in message and "570.86.15" in message and ">= 580.65.06" in message
    assert "CUDA 13.0" in message and "'auto' or 'cpu'" in message


def test_cuda_without_a_gpu_in_the_pod_says_so(cuda_torch_without_gpu: Path) -> None:
    with pytest.raises(BadInputError, match=r"no NVIDIA driver is loaded .* nvidia\.com/gpu"):
        pick_device("cuda")


def test_cuda_with_a_new_driver_but_no_device_gives_torchs_reason(cuda_torch_without_gpu: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cuda_torch_without_gpu.write_text(OPEN)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BadInputError) as e:
        pick_device("cuda")
    assert "found version 12080" in str(e.value) and "more text" not in str(e.value)
    assert "580.65.06" in str(e.value) and "CUDA_VISIBLE_DEVICES=''" in str(e.value)  # an empty mask hides all


def test_auto_falls_back_to_cpu_and_warns_only_on_a_gpu_node(cuda_torch_without_gpu: Path) -> None:
    warnings: list[str] = []
    assert pick_device("auto", warnings.append) == "cpu"
    assert warnings == []  # no driver: a CPU node, as expected
    cuda_torch_without_gpu.write_text(PROPRIETARY)
    assert pick_device("auto", warnings.append) == "cpu"
    [warning] = warnings
    assert warning.startswith("train.device auto: training on the CPU") and "570.86.15" in warning


def test_cpu_only_torch_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(BadInputError, match="CPU-only build"):
        pick_device("cuda")
    assert pick_device("cpu") == "cpu"


def test_the_stage_fails_at_startup_with_the_reason(cuda_torch_without_gpu: Path, tmp_path: Path) -> None:
    from spaceport.stages.runner import run_stage
    from tests.train.fixtures import write_sfm_output

    cuda_torch_without_gpu.write_text(PROPRIETARY)
    write_sfm_output(tmp_path / "sfm", n_gaussians=50, n_views=4, width=32, height=24, n_points=60, seed=1)
    with pytest.raises(BadInputError, match=r"570\.86\.15"):
        run_stage("train", str(tmp_path / "sfm"), str(tmp_path / "out"), {"device": "cuda", "iterations": 5})
    assert not (tmp_path / "out" / "splats.ply").exists()

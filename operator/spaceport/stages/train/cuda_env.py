"""Whether this process can train on a GPU, and if not, why: the CUDA build of torch, the NVIDIA driver.

torch reports only ``torch.cuda.is_available() == False`` whatever the cause; a stage that asked for
``device: cuda`` must say which it is (no GPU given to the Pod, a driver older than the wheels' CUDA
needs, a CPU-only torch), and one on ``auto`` must not drop to the CPU on a GPU node without a word.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

DRIVER_MINIMUM: dict[int, str] = {12: "525.60.13", 13: "580.65.06"}
"""Oldest Linux x86-64 NVIDIA driver each CUDA major version runs on (NVIDIA's CUDA release notes, table
of toolkit and driver versions: minor version compatibility within a major version). The stage image's
torch 2.13.0 wheels from PyPI are CUDA 13.0 builds (images/cuda-pins.json), hence driver >= 580.65.06."""

DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
"""Written by the loaded NVIDIA kernel module; the NVIDIA container runtime shows it inside GPU Pods."""


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def driver_version(path: Path = DRIVER_VERSION_FILE) -> str | None:
    """The loaded NVIDIA kernel module's version (``580.65.06``), or None where no driver is loaded."""
    try:
        text = path.read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return match.group(1) if match else None


def required_driver(cuda: str | None) -> str | None:
    """The oldest driver that torch's CUDA version ``cuda`` (``"13.0"``) runs on; None if unknown."""
    if not cuda:
        return None
    return DRIVER_MINIMUM.get(version_tuple(cuda)[0])


def cuda_problem() -> str | None:
    """Why training cannot use CUDA in this process, in words an operator can act on; None when it can."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (the stage image's CPU variant)"
    if torch.cuda.is_available():
        return None
    found, need = driver_version(), required_driver(torch.version.cuda)
    needs = f"torch {torch.__version__} is built for CUDA {torch.version.cuda}" + (
        f", which needs an NVIDIA driver >= {need}" if need else "")
    if found is None:
        return (f"no NVIDIA driver is loaded in this container (no {DRIVER_VERSION_FILE}): the Pod got no GPU "
                f"(it must request nvidia.com/gpu on a GPU node); {needs}")
    if need is not None and version_tuple(found) < version_tuple(need):
        return f"the node's NVIDIA driver is {found}, too old: {needs}"
    masks = [f"{k}={os.environ[k]!r}" for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES") if k in os.environ]
    detail = ""
    try:
        torch.cuda.init()
    except Exception as e:  # torch's own reason, where it has one
        detail = f" ({str(e).splitlines()[0][:200]})"
    return (f"torch sees no CUDA device{detail} with NVIDIA driver {found}; "
            f"{', '.join(masks) if masks else 'no *_VISIBLE_DEVICES set'}")

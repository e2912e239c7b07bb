"""Usage in status: requested CPUs and GPUs times each stage Job's wall time, and a cost estimate from prices.

Reserved, not measured: a Pod holds its requests for as long as it runs, so that is what a cluster bills.
The wall time runs from the Job's startTime to its completion (or failure), across retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from spaceport.api.reconstruction import StageStatus, Usage

GPU_SUFFIX = "/gpu"
"""Extended resources counted as GPUs: nvidia.com/gpu, amd.com/gpu, gpu.intel.com/... ends differently, but
the two common ones end so."""


def cpu_cores(quantity: Any) -> float:
    """A Kubernetes CPU quantity ("4", "500m", 2, "1.5") in cores; 0 when absent or unreadable."""
    if quantity is None:
        return 0.0
    text = str(quantity).strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return 0.0


def requested(job: Mapping[str, Any]) -> tuple[float, float]:
    """(CPU cores, GPUs) the stage container asks for: requests, else limits (GPUs are set as limits)."""
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers:
        return 0.0, 0.0
    resources = containers[0].get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    cpus = cpu_cores(requests.get("cpu", limits.get("cpu")))
    gpus = sum(cpu_cores(v) for k, v in {**requests, **limits}.items() if k.endswith(GPU_SUFFIX))
    return cpus, gpus


def seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (b - a).total_seconds())


def stage_usage(start: str | None, end: str | None, cpus: float, gpus: float) -> Usage | None:
    if not start:
        return None
    wall = seconds(start, end)
    return Usage(wall_seconds=round(wall, 1), cpu_seconds=round(wall * cpus, 1), gpu_seconds=round(wall * gpus, 1))


def add_usage(a: Usage | None, b: Usage | None) -> Usage | None:
    """Two Jobs' usage together (a stage of two Jobs: partitioned training's blocks and their merge)."""
    if a is None or b is None:
        return a or b
    return Usage(wall_seconds=round(a.wall_seconds + b.wall_seconds, 1),
                 cpu_seconds=round(a.cpu_seconds + b.cpu_seconds, 1),
                 gpu_seconds=round(a.gpu_seconds + b.gpu_seconds, 1))


def total(stages: Mapping[str, StageStatus], cpu_hour: float | None, gpu_hour: float | None,
          currency: str) -> Usage | None:
    parts = [s.usage for s in stages.values() if s.usage is not None]
    if not parts:
        return None
    cpu = round(sum(u.cpu_seconds for u in parts), 1)
    gpu = round(sum(u.gpu_seconds for u in parts), 1)
    cost = None
    if cpu_hour is not None or gpu_hour is not None:
        cost = round(cpu / 3600 * (cpu_hour or 0.0) + gpu / 3600 * (gpu_hour or 0.0), 4)
    return Usage(wall_seconds=round(sum(u.wall_seconds for u in parts), 1), cpu_seconds=cpu, gpu_seconds=gpu,
                 cost=cost, currency=currency if cost is not None else None)

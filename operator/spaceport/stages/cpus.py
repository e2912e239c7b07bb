"""How many CPU threads a stage should run: the CPUs it may use, not the CPUs the node has.

A container with a CPU limit sees every core of its node (``os.cpu_count()``) and usually all of them in
its affinity mask, but the kernel lets it run only ``quota / period`` CPUs' worth of time per period
(the CFS bandwidth limit Kubernetes sets from ``resources.limits.cpu``). Thread pools sized by the core
count then stall: the compiled kernels' parallel regions wait at every barrier for threads the kernel
has throttled until the next period. The stages size their pools with :func:`usable_cpus` instead,
as Go's automaxprocs and the JVM's container support do.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _memberships(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and cgroup v1 ``cpu`` controller path, from ``/proc/self/cgroup``."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(base: Path, path: str) -> list[Path]:
    """``base/path`` and each parent up to ``base`` (a parent's limit binds its children too). Inside a
    cgroup namespace the listed path may not exist under the mount: then only ``base`` itself."""
    relative = Path(path.lstrip("/"))
    if not (base / relative).is_dir():
        return [base]
    return [base / relative, *(base / p for p in relative.parents)]


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" or float(period) <= 0 else float(quota) / float(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPUs' worth of time per period this process's cgroups allow (the tightest along its path, v2
    or v1), or None when no limit is set or none can be read."""
    v2, v1 = _memberships(proc_cgroup)
    quotas: list[float] = []
    if v2 is not None:
        base = root / "unified" if (root / "unified" / "cgroup.controllers").exists() else root
        quotas += [q for d in _ancestors(base, v2) if (q := _v2_quota(d)) is not None]
    if v1 is not None:
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            if (root / name).is_dir():
                quotas += [q for d in _ancestors(root / name, v1) if (q := _v1_quota(d)) is not None]
                break
    return min(quotas) if quotas else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """Threads to run: the CPUs in this process's affinity mask, capped by its cgroup CPU limit rounded
    down (at least 1)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota(root, proc_cgroup)
    if quota is not None:
        available = min(available, max(1, math.floor(quota)))
    return max(1, available)

"""Thread counts follow the CPUs a stage may use: its affinity and its cgroup CPU limit."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from spaceport.stages.cpus import cpu_quota, usable_cpus

OPERATOR = str(Path(__file__).resolve().parents[2] / "operator")
PRINT_USABLE = "from spaceport.stages.cpus import usable_cpus, cpu_quota; print(usable_cpus(), cpu_quota())"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_limit_of_the_process_or_a_parent(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    root = tree(tmp_path / "fs", {"cgroup.controllers": "cpu memory", "kubepods/pod1/ctr/cpu.max": "max 100000\n",
                                  "kubepods/pod1/cpu.max": "250000 100000\n", "kubepods/cpu.max": "max 100000\n"})
    assert cpu_quota(root, proc) == 2.5  # the pod's limit binds the container below it
    assert usable_cpus(root, proc) == min(len(os.sched_getaffinity(0)), 2)
    (root / "kubepods/pod1/cpu.max").write_text("max 100000\n")
    assert cpu_quota(root, proc) is None and usable_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_cgroup_namespace_reads_the_mount_root(tmp_path: Path) -> None:
    """Inside a container's cgroup namespace /proc/self/cgroup says "/" and the limit sits at the root."""
    proc = tmp_path / "proc"
    proc.write_text("0::/\n")
    root = tree(tmp_path / "fs", {"cgroup.controllers": "cpu", "cpu.max": "50000 100000\n"})
    assert cpu_quota(root, proc) == 0.5
    assert usable_cpus(root, proc) == 1  # never below one thread
    proc.write_text("0::/path/outside/this/namespace\n")
    assert cpu_quota(root, proc) == 0.5


def test_cgroup_v1_and_hybrid_hierarchies(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.write_text("4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    root = tree(tmp_path / "fs", {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
                                  "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
                                  "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
                                  "unified/cgroup.controllers": ""})
    assert cpu_quota(root, proc) == 3.0
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(root, proc) is None


def test_no_cgroup_information_means_no_limit(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path, tmp_path / "missing") is None
    (tmp_path / "proc").write_text("garbage\n")
    assert cpu_quota(tmp_path, tmp_path / "proc") is None
    assert usable_cpus(tmp_path, tmp_path / "missing") == len(os.sched_getaffinity(0))


def run_python(code: str, preexec: str = "") -> list[str]:
    return subprocess.run([sys.executable, "-c", preexec + code], env={**os.environ, "PYTHONPATH": OPERATOR},
                          capture_output=True, text=True, check=True).stdout.split()


def test_affinity_caps_the_threads() -> None:
    usable, _ = run_python(PRINT_USABLE, "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); ")
    assert usable == "1"


def v1_cpu_cgroup() -> Path | None:
    """A fresh cgroup v1 cpu controller group this process may create (root on a v1 host), else None."""
    base = Path("/sys/fs/cgroup/cpu")
    if not (base / "cpu.cfs_quota_us").exists() or not os.access(base, os.W_OK):
        return None
    group = base / f"spaceport-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
    except OSError:
        return None
    return group


def test_a_real_cgroup_cpu_limit_caps_the_threads() -> None:
    group = v1_cpu_cgroup()
    if group is None:
        pytest.skip("no writable cgroup v1 cpu controller here (needs root on a cgroup v1 host)")
    try:
        (group / "cpu.cfs_quota_us").write_text("100000")  # one CPU's worth of time per 100 ms period
        out = subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" -c "$1"', sys.executable,
                              PRINT_USABLE], env={**os.environ, "PYTHONPATH": OPERATOR}, capture_output=True,
                             text=True, check=True).stdout.split()
        assert out == ["1", "1.0"]
    finally:
        group.rmdir()

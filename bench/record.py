"""What every benchmark prints last: one JSON record of its settings, the machine and its numbers.

Each script in bench/ prints a table for people and then one line ``BENCH {...}`` that tools (and
tests/benchmarks/test_smoke.py) read. ``--smoke`` runs a script on tiny inputs in seconds: CI runs every
script that way, so none of them can stop working unnoticed.

A reference measured once and cached (splat-transform's run) carries :func:`machine` with it; a ratio
against it is a same-machine ratio only when :func:`same_machine` says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

PREFIX = "BENCH "


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """The machine a measurement ran on: CPU model (and family/model numbers: "AMD EPYC" alone does not say
    Zen 3 from Zen 4), cores, SIMD width, memory, and an id for comparisons.

    The id digests the CPU model, the core count, the memory and /etc/machine-id (when there is one),
    so two runs on the same VM share it and a run on another VM of the same shape does not.
    """
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    simd = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else platform.machine()
    model = cpu.get("model name") or platform.processor() or platform.machine()
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine_id = ""
    described = {"cpu": model, "cpuFamilyModel": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
                 "cores": os.cpu_count(), "simd": simd, "memoryGiB": _memory_gib()}
    digest = hashlib.sha256(json.dumps({**described, "machineId": machine_id}, sort_keys=True).encode())
    return {**described, "id": digest.hexdigest()[:12], "python": platform.python_version()}


def same_machine(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a and b and a.get("id") and a.get("id") == b.get("id"))


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="tiny inputs, seconds: checks that the script runs and what it prints (CI)")


def add_flight_arguments(parser: argparse.ArgumentParser, *, images: int, width: int, height: int, seed: int) -> None:
    """The generated flight a benchmark reconstructs: photo count, size and the scene's seed."""
    parser.add_argument("--images", type=int, default=images, help="photos in the generated flight")
    parser.add_argument("--width", type=int, default=width, help="photo width in pixels")
    parser.add_argument("--height", type=int, default=height, help="photo height in pixels")
    parser.add_argument("--seed", type=int, default=seed, help="the generated scene's seed")


def emit(bench: str, *, smoke: bool, settings: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """Print the record as one line after the table; returns it."""
    record = {"bench": bench, "smoke": smoke, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine(), "loadAverage": round(os.getloadavg()[0], 2),
              "settings": settings, "results": results}
    sys.stdout.flush()
    print(PREFIX + json.dumps(record, default=_plain), flush=True)
    return record


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

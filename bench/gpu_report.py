"""The one table `make gpu-check` prints (bench/gpu_check.sh): the GPU and its driver, the CUDA toolchain,
gsplat's build, every GPU test's outcome and bench/train_gpu.py's rows, from the files the check wrote.

    python bench/gpu_report.py OUT_DIR      (exit 1 when a test failed or a step left nothing behind)
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import PREFIX  # noqa: E402
from images.check_pins import driver_minimum  # noqa: E402


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.replace("-", ".").split(".") if p.isdigit())


def read(out: Path, name: str) -> str | None:
    path = out / name
    return path.read_text().strip() if path.exists() else None


def environment_rows(out: Path) -> tuple[list[tuple[str, str]], bool]:
    rows: list[tuple[str, str]] = []
    ok = True
    gpu = (read(out, "gpu.csv") or "").splitlines()
    env: dict[str, Any] = json.loads(read(out, "env.json") or "{}")
    driver = None
    for line in gpu:
        name, driver, cap, memory = (part.strip() for part in line.split(",", 3))
        rows.append(("GPU", f"{name}, compute capability {cap}, {memory}, driver {driver}"))
    cuda = env.get("torchCuda")
    if cuda and driver:
        need = driver_minimum().get(int(cuda.split(".")[0]))
        enough = need is not None and version_tuple(driver) >= version_tuple(need)
        ok &= enough
        rows.append(("driver for CUDA " + cuda, f"needs >= {need}: {'ok' if enough else 'TOO OLD'}"))
    rows.append(("torch", f"{env.get('torch', '?')} (CUDA {cuda}); the stage image pins 2.13.0"))
    rows.append(("nvcc", env.get("nvcc") or "not found"))
    seconds = read(out, "gsplat-build-seconds")
    if seconds is not None:
        rows.append((f"gsplat {env.get('gsplat', '?')} CUDA build", f"ok, {seconds} s"))
    else:
        ok = False
        log = (read(out, "gsplat-build.log") or "no log").splitlines()[-3:]
        rows.append(("gsplat CUDA build", "FAILED: " + " / ".join(line.strip()[:160] for line in log)))
    return rows, ok


def test_rows(out: Path) -> tuple[list[tuple[str, str]], bool]:
    path = out / "tests.xml"
    if not path.exists():
        return [("tests", "NOT RUN")], False
    rows, ok = [], True
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            counts["failed"] += 1
            ok = False
            message = (failure.get("message") or failure.text or "").strip().splitlines()
            rows.append((name, "FAILED: " + (message[0][:200] if message else "")))
        elif skipped is not None:
            counts["skipped"] += 1
            rows.append((name, "skipped: " + (skipped.get("message") or "")[:160]))
        else:
            counts["passed"] += 1
            rows.append((name, f"passed, {float(case.get('time', 0)):.1f} s"))
    rows.insert(0, ("tests", f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"))
    return rows, ok


def bench_rows(out: Path) -> tuple[list[tuple[str, str]], bool]:
    text = read(out, "bench.log")
    records = [line[len(PREFIX):] for line in (text or "").splitlines() if line.startswith(PREFIX)]
    if not records:
        tail = (text or "no output").splitlines()[-2:]
        return [("bench/train_gpu.py", "NO RESULT: " + " / ".join(t.strip()[:160] for t in tail))], False
    record = json.loads(records[-1])
    settings = record["settings"]
    rows = [("bench/train_gpu.py", f"{settings['steps']} steps on {settings.get('gpu') or settings['device']}")]
    for name, r in record["results"].items():
        lpips = f", LPIPS {r['lpips']:.3f}" if r.get("lpips") is not None else ""
        rows.append((name, f"{r['stepsPerSecond']:.1f} steps/s, peak {r['peakMemoryBytes'] / 2**30:.2f} GiB, "
                           f"{r['gaussians']:,} Gaussians, held-out PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}"
                           f"{lpips}, stage {r['stageSeconds']:.0f} s"))
    return rows, True


def table(rows: list[tuple[str, str]]) -> str:
    lines = ["| check | result |", "| --- | --- |"]
    lines += [f"| {a} | {b.replace('|', '/')} |" for a, b in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    rows, ok = [], True
    for part in (environment_rows, test_rows, bench_rows):
        more, fine = part(out)
        rows += more
        ok &= fine
    print(table(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Operator latency: time from creating a Reconstruction to its first Job, and a burst of creations.

Runs the real `spaceport operator` command in a child process against the emulated API server
(tests/operator/emulator.py, served from this process on 127.0.0.1). Times are taken by the server:
when the Reconstruction was stored and when its sfm Job was stored.

Reference: the same server's bare floor, a client creating an object and a watcher seeing it,
so the ratio shows what the operator adds on top of the API round trips.

Runs once per storage (``--storage both``, the default): Reconstructions on volume claims, and on S3 (a
moto server, bench/s3.py), where the operator reads the named credentials Secret before the first Job.
``--smoke``: 3 sequential, a burst of 5 (seconds). The last line printed is a JSON record (bench/record.py).

    .venv/bin/python bench/operator_latency.py [--sequential 50] [--burst 200] [--storage volume|s3|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import s3  # noqa: E402
from bench.record import add_smoke_flag, emit  # noqa: E402
from tests.operator.emulator import ClusterEmulator, Obj  # noqa: E402
from tests.operator.harness import EmulatorThread, load_crds  # noqa: E402

RECONS = "/apis/spaceport.dev/v1alpha1/namespaces/default/reconstructions"
GOAL_P95_S = 1.0


class TimedEmulator(ClusterEmulator):
    """Notes when each Reconstruction and each Job is first stored (server clock)."""

    def _store(self, key: tuple[str, str], obj: Obj, ns: str | None, name: str, new: bool = False) -> Obj:
        stored = super()._store(key, obj, ns, name, new)
        if new:
            marks: dict[tuple[str, str], float] = self.__dict__.setdefault("marks", {})
            marks.setdefault((key[1], name), time.monotonic())
        return stored


class TimedEmulatorThread(EmulatorThread):
    emulator_class = TimedEmulator


def recon(name: str, storage: str = "volume") -> dict[str, Any]:
    return {"apiVersion": "spaceport.dev/v1alpha1", "kind": "Reconstruction", "metadata": {"name": name},
            "spec": s3.spec(storage, name)}


def marks(emulator: TimedEmulatorThread) -> dict[tuple[str, str], float]:
    return dict(emulator.emu.__dict__.get("marks", {}))  # type: ignore[union-attr]


async def wait_for_job(emulator: TimedEmulatorThread, name: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = marks(emulator)
        if ("jobs", f"{name}-r1-sfm") in m:
            return m[("jobs", f"{name}-r1-sfm")] - m[("reconstructions", name)]
        await asyncio.sleep(0.002)
    raise TimeoutError(f"no Job for {name} within {timeout}s")


async def floor_latency(session: aiohttp.ClientSession, emulator: TimedEmulatorThread, n: int) -> list[float]:
    """Create a ConfigMap and wait until a watch stream delivers it: the server's own round trip."""
    out = []
    async with session.get("/api/v1/namespaces/default/configmaps", params={"watch": "true",
                                                                           "resourceVersion": "1"}) as watch:
        for i in range(n):
            t0 = time.monotonic()
            await session.post("/api/v1/namespaces/default/configmaps",
                               json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"floor-{i}"}})
            while True:
                line = await watch.content.readline()
                if json.loads(line)["object"]["metadata"]["name"] == f"floor-{i}":
                    break
            out.append(time.monotonic() - t0)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) >= 2 else values[0]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_kubeconfig(server: str, folder: Path) -> Path:
    """A kubeconfig for the operator process pointing at the emulator (any token passes there)."""
    path = folder / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": server}}],
        "users": [{"name": "bench", "user": {"token": "unused"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
    return path


@contextlib.contextmanager
def storage_backend(storage: str) -> Any:
    """The S3 endpoint for an S3-backed run (None for volumes)."""
    if storage == "s3":
        with s3.moto_server() as url:
            yield url
    else:
        yield None


async def measure(args: argparse.Namespace, storage: str) -> dict[str, Any]:
    """One operator process against a fresh emulator; every number of one storage's table."""
    with TimedEmulatorThread(load_crds()) as emulator, tempfile.TemporaryDirectory() as tmp, \
            storage_backend(storage) as s3_url:
        kubeconfig = write_kubeconfig(emulator.url, Path(tmp))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "SPACEPORT_HEALTH_ENDPOINT": "none"}
        log = open(Path(tmp) / "operator.log", "w")  # noqa: SIM115
        verbose = ["-v"] if os.environ.get("BENCH_DEBUG") else []
        operator = subprocess.Popen([str(ROOT / ".venv/bin/spaceport"), *verbose, "operator", "-A", "--standalone"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            async with aiohttp.ClientSession(emulator.url) as session:
                if s3_url:
                    await session.post("/api/v1/namespaces/default/secrets", json=s3.secret(s3_url))
                floor = await floor_latency(session, emulator, args.floor)
                # Warm-up: the operator is ready once it handles a first object.
                await session.post(RECONS, json=recon("warmup", storage))
                await wait_for_job(emulator, "warmup", 60)

                sequential = []
                for i in range(args.sequential):
                    name = f"seq-{i}"
                    await session.post(RECONS, json=recon(name, storage))
                    sequential.append(await wait_for_job(emulator, name, 30))

                names = [f"burst-{i}" for i in range(args.burst)]
                t0 = time.monotonic()
                await asyncio.gather(*(session.post(RECONS, json=recon(n, storage)) for n in names))
                burst = await asyncio.gather(*(wait_for_job(emulator, n, 180) for n in names))
                burst_wall = time.monotonic() - t0
                await asyncio.sleep(args.settle)  # duplicates, if any, would show up now
                async with session.get("/apis/batch/v1/namespaces/default/jobs") as resp:
                    jobs = (await resp.json())["items"]
            per_recon: dict[str, list[str]] = {}
            for job in jobs:
                owner = job["metadata"]["labels"]["spaceport.dev/reconstruction"]
                per_recon.setdefault(owner, []).append(job["metadata"]["name"])
            exact = sum(1 for n in names if per_recon.get(n) == [f"{n}-r1-sfm"])
            rss = peak_rss_mib(operator.pid)
        except Exception:
            log.flush()
            print("".join((Path(tmp) / "operator.log").read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
            raise
        finally:
            operator.terminate()
            operator.wait(30)
            log.close()

    print(f"\n{storage}-backed Reconstructions:")
    print(f"API floor (create -> watch event), n={len(floor)}: p50 {statistics.median(floor) * 1000:.1f} ms, "
          f"p95 {p95(floor) * 1000:.1f} ms")
    print(f"create -> first Job, sequential n={len(sequential)}: p50 {statistics.median(sequential) * 1000:.0f} ms, "
          f"p95 {p95(sequential) * 1000:.0f} ms, max {max(sequential) * 1000:.0f} ms "
          f"(p95 / goal {GOAL_P95_S:.0f} s = {p95(sequential) / GOAL_P95_S:.2f}; "
          f"p95 / API floor p95 = {p95(sequential) / p95(floor):.1f}x)")
    print(f"burst of {len(names)}: all first Jobs after {burst_wall:.1f} s; per-Reconstruction p50 "
          f"{statistics.median(burst):.2f} s, p95 {p95(burst):.2f} s, max {max(burst):.2f} s")
    print(f"burst: {exact}/{len(names)} Reconstructions have exactly one Job (their sfm Job) "
          f"after {args.settle:.0f} s more; Jobs in total: {len(jobs)}")
    print(f"operator peak RSS (VmHWM): {rss:.0f} MiB")
    return {"floorP50Ms": statistics.median(floor) * 1000, "floorP95Ms": p95(floor) * 1000,
            "sequential": len(sequential), "sequentialP50Ms": statistics.median(sequential) * 1000,
            "sequentialP95Ms": p95(sequential) * 1000, "sequentialMaxMs": max(sequential) * 1000,
            "burst": len(names), "burstAllJobsSeconds": burst_wall, "burstP50Seconds": statistics.median(burst),
            "burstP95Seconds": p95(burst), "burstExactlyOneJob": exact, "jobs": len(jobs), "peakRssMiB": rss,
            "ok": exact == len(names)}


async def main(args: argparse.Namespace) -> int:
    results = {storage: await measure(args, storage) for storage in s3.storages(args.storage)}
    emit("operator_latency", smoke=args.smoke, settings={"sequential": args.sequential, "burst": args.burst,
                                                          "settle": args.settle, "storage": args.storage,
                                                          "floor": args.floor},
         results=results)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait for stray duplicates")
    parser.add_argument("--storage", choices=[*s3.STORAGES, "both"], default="both")
    parser.add_argument("--floor", type=int, default=30, help="round trips timed for the API floor")
    add_smoke_flag(parser)
    parsed = parser.parse_args()
    if parsed.smoke:
        parsed.sequential, parsed.burst, parsed.settle, parsed.floor = 3, 5, 0.5, 5
    raise SystemExit(asyncio.run(main(parsed)))

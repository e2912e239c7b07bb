"""Operator under load: N Reconstructions created at once, run to Succeeded by a simulated Job controller.

The real `spaceport operator` command runs in a child process against the emulated API server
(tests/operator/emulator.py, served from this process on 127.0.0.1). A simulated Job controller and
kubelet complete every stage Job shortly after it appears: a Pod whose container terminated with the
stage's result as its termination message (outputs are on volumes, so that is where metrics come from),
then the Job's Complete condition. Times are taken by the server: when each Reconstruction and its first
Job were stored.

The simulated Job controller finds Jobs the way Kubernetes' own does, through an informer: one LIST, then
a WATCH from the list's resourceVersion (listing again only if the watch fails). It used to LIST every Job
every 0.2 s: by the end of the load that is 1500 Jobs, megabytes of JSON serialized by the server and parsed
by the harness per list, on the same cores and under the same GIL as the emulated API server, so the
operator was charged for latency that a polling harness caused and a real cluster would not have.

Checks: every Reconstruction reaches Succeeded; each has exactly its three Jobs (no duplicates, no Job
created twice: the server counts every Job POST); p50/p99 of create -> first Job; operator peak RSS.
Goals: p99 <= 5 s, RSS <= 300 MB. Reference: the API server's own create -> watch-event round trip.

Runs once per storage (``--storage both``, the default). On S3 (a moto server process, bench/s3.py) each
simulated stage also writes what a real one does to its output prefix: ``progress.json`` when it starts
and ``result.json`` when it ends; the operator reads the credentials Secret, mirrors progress from the
bucket and reads the result there. ``--smoke``: 5 Reconstructions (seconds). The last line printed is a
JSON record (bench/record.py).

    .venv/bin/python bench/operator_load.py [--count 500] [--storage volume|s3|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import s3  # noqa: E402
from bench.operator_latency import (  # noqa: E402
    TimedEmulator,
    TimedEmulatorThread,
    floor_latency,
    marks,
    storage_backend,
    write_kubeconfig,
)
from bench.record import add_smoke_flag, emit  # noqa: E402
from tests.operator.emulator import Obj, parse_route  # noqa: E402
from tests.operator.harness import load_crds  # noqa: E402

from spaceport.contract import ProgressRecord, StageResult  # noqa: E402

RECONS = "/apis/spaceport.dev/v1alpha1/namespaces/default/reconstructions"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
PODS = "/api/v1/namespaces/default/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}
GOAL_P99_S = 5.0
GOAL_RSS_MB = 300.0


class CountingEmulator(TimedEmulator):
    """Also counts Job creations that reached the store (a second one for a name would be a duplicate), and
    every request by client, verb and resource, so the operator's API calls per Reconstruction are visible."""

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        route = parse_route(raw.path)
        if route is not None:
            watch = raw.method == "GET" and raw.query.get("watch") in ("true", "1")
            verb = "watch" if watch else {"GET": "get" if route.name else "list", "POST": "create"}.get(
                raw.method, raw.method.lower())
            who = "operator" if "kopf" in raw.headers.get("User-Agent", "") or \
                "OpenAPI" in raw.headers.get("User-Agent", "") else "harness"
            what = route.plural + (f"/{route.sub}" if route.sub else "")
            calls: dict[tuple[str, str, str], int] = self.__dict__.setdefault("calls", {})
            calls[(who, verb, what)] = calls.get((who, verb, what), 0) + 1
        return await super().__call__(raw)

    def _store(self, key: tuple[str, str], obj: Obj, ns: str | None, name: str, new: bool = False) -> Obj:
        if new and key[1] == "jobs":
            counts: dict[str, int] = self.__dict__.setdefault("job_counts", {})
            counts[name] = counts.get(name, 0) + 1
        return super()._store(key, obj, ns, name, new)


class CountingEmulatorThread(TimedEmulatorThread):
    emulator_class = CountingEmulator


def recon(name: str, storage: str = "volume") -> dict[str, Any]:
    return {"apiVersion": "spaceport.dev/v1alpha1", "kind": "Reconstruction", "metadata": {"name": name},
            "spec": s3.spec(storage, name)}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def complete_job(session: aiohttp.ClientSession, job: dict[str, Any], run_s: float,
                       bucket: Any | None = None) -> None:
    """What the kubelet and the Job controller write when a stage's Pod exits 0; with ``bucket`` (an S3
    client) also what the stage itself writes to its output prefix."""
    name, stage = job["metadata"]["name"], job["metadata"]["labels"]["spaceport.dev/stage"]
    started = now_iso()
    if bucket is not None:
        progress = ProgressRecord(fraction=0.5, message=f"{stage}: halfway", updated=started)
        await asyncio.to_thread(s3.put, bucket, s3.output_uri(job), "progress.json", progress.to_json())
    await session.patch(f"{JOBS}/{name}/status", data=json.dumps({"status": {"active": 1, "startTime": started}}),
                        headers=MERGE)
    await asyncio.sleep(run_s)
    result = StageResult(stage=stage, started_at=started, finished_at=now_iso(), duration_seconds=run_s,
                         metrics={"images": 40} if stage == "sfm" else {"gaussians": 1000})
    if bucket is not None:
        await asyncio.to_thread(s3.put, bucket, s3.output_uri(job), "result.json", result.to_json())
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-0", "labels": {"job-name": name}},
           "spec": {"containers": [{"name": "stage", "image": "x"}]}}
    await session.post(PODS, json=pod)
    await session.patch(f"{PODS}/{name}-0/status", headers=MERGE, data=json.dumps({"status": {
        "phase": "Succeeded", "containerStatuses": [{
            "name": "stage", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now_iso(),
                                     "message": result.termination_message()}}}]}}))
    await session.patch(f"{JOBS}/{name}/status", headers=MERGE, data=json.dumps({"status": {
        "active": 0, "succeeded": 1, "completionTime": now_iso(),
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}}))


async def job_controller(session: aiohttp.ClientSession, run_s: float, stop: asyncio.Event,
                         bucket: Any | None = None) -> None:
    """The Job controller's informer: one LIST of Jobs, then a WATCH from the list's resourceVersion.

    Each Job is started once, when it is first seen not suspended (a Job created suspended would start
    when un-suspended; this benchmark sets no Kueue queue, so the operator creates none suspended). A watch
    that ends is resumed from the last resourceVersion seen; one that fails (an ERROR event such as 410
    Expired, or a broken connection) starts over with a LIST, as client-go's reflector does."""
    started: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()

    def react(job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        if name in started or (job.get("spec") or {}).get("suspend"):
            return
        started.add(name)
        task = asyncio.create_task(complete_job(session, job, run_s, bucket))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    informer = asyncio.create_task(inform(session, JOBS, react))
    await stop.wait()
    informer.cancel()
    await asyncio.gather(informer, return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)


async def inform(session: aiohttp.ClientSession, path: str, react: Callable[[dict[str, Any]], None]) -> None:
    """LIST then WATCH `path` until cancelled, calling `react` with every object listed, added or modified."""
    no_deadline = aiohttp.ClientTimeout(total=None, sock_read=None)
    while True:
        try:
            async with session.get(path) as resp:
                resp.raise_for_status()
                listed = await resp.json()
            for obj in listed["items"]:
                react(obj)
            version = listed["metadata"]["resourceVersion"]
            while True:  # a watch that times out normally resumes where it was
                params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "300"}
                async with session.get(path, params=params, timeout=no_deadline) as watch:
                    watch.raise_for_status()
                    async for line in watch.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # e.g. 410 Expired: our version is gone, list again
                            raise RuntimeError(event["object"].get("message", "watch error"))
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            react(event["object"])
        except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as e:
            print(f"job controller: watch on {path} failed ({e!r}); listing again", file=sys.stderr)
            await asyncio.sleep(0.2)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) >= 2 else values[0]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when pid is None)."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


async def measure(args: argparse.Namespace, storage: str) -> dict[str, Any]:
    """One operator process against a fresh emulator, N Reconstructions on ``storage``; the table's numbers."""
    with CountingEmulatorThread(load_crds()) as emulator, tempfile.TemporaryDirectory() as tmp, \
            storage_backend(storage) as s3_url:
        kubeconfig = write_kubeconfig(emulator.url, Path(tmp))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "SPACEPORT_HEALTH_ENDPOINT": "none"}
        log_path = Path(tmp) / "operator.log"
        log = open(log_path, "w")  # noqa: SIM115
        operator = subprocess.Popen([str(ROOT / ".venv/bin/spaceport"), "operator", "-A", "--standalone"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        stop = asyncio.Event()
        try:
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(emulator.url, connector=connector) as session:
                bucket = None
                if s3_url:
                    await session.post("/api/v1/namespaces/default/secrets", json=s3.secret(s3_url))
                    bucket = s3.client(s3_url)
                floor = await floor_latency(session, emulator, args.floor)  # type: ignore[arg-type]
                controller = asyncio.create_task(job_controller(session, args.run_seconds, stop, bucket))
                await session.post(RECONS, json=recon("warmup", storage))  # the operator is ready once it handles one
                await wait_succeeded(session, ["warmup"], 120)

                names = [f"load-{i}" for i in range(args.count)]
                operator_cpu0, harness_cpu0 = cpu_seconds(operator.pid), cpu_seconds()
                calls0 = dict(emulator.emu.__dict__.get("calls", {}))  # type: ignore[union-attr]
                profiler = start_profiler(operator.pid)
                t0 = time.monotonic()
                first_jobs = asyncio.create_task(cpu_at_first_jobs(emulator, names, operator.pid))  # type: ignore[arg-type]
                await asyncio.gather(*(session.post(RECONS, json=recon(n, storage)) for n in names))
                created_s = time.monotonic() - t0
                succeeded = await wait_succeeded(session, names, args.timeout)
                all_done_s = time.monotonic() - t0
                calls = {k: v - calls0.get(k, 0)
                         for k, v in emulator.emu.__dict__.get("calls", {}).items()}  # type: ignore[union-attr]
                stop_profiler(profiler)
                await asyncio.sleep(args.settle)  # duplicates, if any, would show up now
                stop.set()
                await controller
                async with session.get(JOBS) as resp:
                    jobs = (await resp.json())["items"]
            rss = peak_rss_mb(operator.pid)
            operator_cpu_first, harness_cpu_first = (c - c0 for c, c0 in zip(await first_jobs,
                                                                             (operator_cpu0, harness_cpu0),
                                                                             strict=True))
            operator_cpu, harness_cpu = cpu_seconds(operator.pid) - operator_cpu0, cpu_seconds() - harness_cpu0
        except Exception:
            log.flush()
            print("".join(log_path.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
            raise
        finally:
            operator.terminate()
            operator.wait(30)
            log.close()
            log_lines = len(log_path.read_text().splitlines())
        m = marks(emulator)  # type: ignore[arg-type]
        counts: dict[str, int] = emulator.emu.__dict__.get("job_counts", {})  # type: ignore[union-attr]

    latency = [m[("jobs", f"{n}-r1-sfm")] - m[("reconstructions", n)] for n in names if ("jobs", f"{n}-r1-sfm") in m]
    per_recon: dict[str, set[str]] = {}
    for job in jobs:
        per_recon.setdefault(job["metadata"]["labels"]["spaceport.dev/reconstruction"], set()).add(
            job["metadata"]["name"])
    exact = sum(1 for n in names if per_recon.get(n) == {f"{n}-r1-{s}" for s in ("sfm", "train", "compress")})
    twice = sorted(name for name, c in counts.items() if c > 1)
    p50, p99 = statistics.median(latency), pct(latency, 99)
    floor_p99 = pct(floor, 99)

    print(f"\n{storage}-backed Reconstructions:")
    print(f"{args.count} Reconstructions POSTed at once in {created_s:.1f} s; all Succeeded after {all_done_s:.1f} s "
          f"({succeeded}/{args.count}; each stage Job 'runs' {args.run_seconds:.1f} s)")
    print(f"create -> first Job: p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(latency):.2f} s "
          f"(n={len(latency)}; p99 / goal {GOAL_P99_S:.0f} s = {p99 / GOAL_P99_S:.2f})")
    print(f"API floor (create -> watch event): p50 {statistics.median(floor) * 1000:.1f} ms, "
          f"p99 {floor_p99 * 1000:.1f} ms; operator p99 / floor p99 = {p99 / floor_p99:.0f}x")
    print(f"Jobs: {len(jobs)} in total, {exact}/{args.count} Reconstructions with exactly their 3 Jobs, "
          f"{len(twice)} Job names created more than once {twice[:5]}")
    print(f"operator peak RSS (VmHWM): {rss:.0f} MB (/ goal {GOAL_RSS_MB:.0f} MB = {rss / GOAL_RSS_MB:.2f})")
    print(f"CPU until the last first Job existed: operator {operator_cpu_first:.1f} s, emulated API server and Job "
          f"controller {harness_cpu_first:.1f} s")
    print(f"operator log: {log_lines} lines")
    print(f"CPU during the load ({os.cpu_count()} cores here): operator {operator_cpu:.1f} s "
          f"({operator_cpu / args.count * 1000:.0f} ms per Reconstruction, 3 Jobs each); emulated API server and "
          f"Job controller {harness_cpu:.1f} s")
    mine = sorted(((verb, what), n) for (who, verb, what), n in calls.items() if who == "operator" and n)
    print(f"operator API calls per Reconstruction ({sum(n for _, n in mine) / args.count:.1f} in all): "
          + ", ".join(f"{verb} {what} {n / args.count:.2f}" for (verb, what), n in mine))
    harness = sorted(((verb, what), n) for (who, verb, what), n in calls.items() if who == "harness" and n)
    print("harness API calls during the load: " + ", ".join(f"{verb} {what} {n}" for (verb, what), n in harness))
    ok = succeeded == args.count and exact == args.count and not twice and p99 <= GOAL_P99_S and rss <= GOAL_RSS_MB
    print("PASS" if ok else "FAIL")
    return {"count": args.count, "succeeded": succeeded, "postSeconds": created_s, "allSucceededSeconds": all_done_s,
            "firstJobP50Seconds": p50, "firstJobP99Seconds": p99, "firstJobMaxSeconds": max(latency),
            "floorP50Ms": statistics.median(floor) * 1000, "floorP99Ms": floor_p99 * 1000, "jobs": len(jobs),
            "exactlyThreeJobs": exact, "createdTwice": len(twice), "peakRssMB": rss,
            "operatorCpuSeconds": operator_cpu, "harnessCpuSeconds": harness_cpu,
            "operatorApiCallsPerReconstruction": sum(n for _, n in mine) / args.count, "ok": ok}


async def main(args: argparse.Namespace) -> int:
    results = {storage: await measure(args, storage) for storage in s3.storages(args.storage)}
    settings = {k: v for k, v in vars(args).items() if k != "smoke"}
    emit("operator_load", smoke=args.smoke, settings=settings, results=results)
    return 0 if all(r["ok"] for r in results.values()) else 1


async def cpu_at_first_jobs(emulator: CountingEmulatorThread, names: list[str], pid: int) -> tuple[float, float]:
    """Operator and harness CPU-seconds at the moment every Reconstruction has its first Job."""
    wanted = [("jobs", f"{n}-r1-sfm") for n in names]
    while not all(k in marks(emulator) for k in wanted):  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
    return cpu_seconds(pid), cpu_seconds()


def start_profiler(pid: int) -> subprocess.Popen[bytes] | None:
    """With BENCH_PYSPY=/path/to/py-spy, sample the operator during the load (py-spy is not a dependency)."""
    spy = os.environ.get("BENCH_PYSPY")
    if not spy:
        return None
    out = os.environ.get("BENCH_PYSPY_OUT", "operator-profile.txt")
    extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()  # e.g. --gil: only samples holding the GIL (CPU)
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--output", out, "--rate", "100",
                             "--nonblocking", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(2)  # SIGINT: py-spy writes its file and exits
        profiler.wait(60)


async def wait_succeeded(session: aiohttp.ClientSession, names: list[str], timeout: float) -> int:
    wanted = set(names)
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        async with session.get(RECONS) as resp:
            items = (await resp.json())["items"]
        done = sum(1 for r in items if r["metadata"]["name"] in wanted
                   and (r.get("status") or {}).get("phase") == "Succeeded")
        if done == len(wanted):
            break
        await asyncio.sleep(0.5)
    return done


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--run-seconds", type=float, default=1.0, help="how long each simulated stage Pod runs")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for all to succeed")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait for stray duplicates")
    parser.add_argument("--storage", choices=[*s3.STORAGES, "both"], default="both")
    parser.add_argument("--floor", type=int, default=30, help="round trips timed for the API floor")
    add_smoke_flag(parser)
    parsed = parser.parse_args()
    if parsed.smoke:
        parsed.count, parsed.run_seconds, parsed.settle, parsed.floor, parsed.timeout = 5, 0.3, 0.5, 5, 120.0
    raise SystemExit(asyncio.run(main(parsed)))

"""Test harness: the emulated API server, the operator running in-process, S3 on moto, a fake Job controller.

Tests play the Job controller: they create Pods with termination messages and patch Job status, as
the kubelet and the Job controller would. Everything goes over HTTP to the emulator.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import yaml

from spaceport.contract import PROGRESS_FILE, RESULT_FILE, StageResult
from spaceport.controller.k8s import Kube
from spaceport.controller.main import build_registry
from spaceport.controller.settings import OperatorSettings
from tests.operator.emulator import ClusterEmulator

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "reconstructions.spaceport.dev.yaml"
RECONS = "/apis/spaceport.dev/v1alpha1/namespaces/{ns}/reconstructions"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
PODS = "/api/v1/namespaces/{ns}/pods"
MERGE = "application/merge-patch+json"


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class Api:
    """A tiny async client for the emulator (the sync Kubernetes client would block the shared loop)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def request(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, path, data=data, headers={"Content-Type": ctype}) as resp:
            payload = await resp.json(content_type=None)
            if resp.status == 404:
                return None
            if resp.status >= 400:
                raise AssertionError(f"{method} {path} -> {resp.status}: {payload}")
            return payload

    async def create(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", path, body)

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def patch(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("PATCH", path, body, MERGE)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)


class EmulatorThread:
    """The emulated API server on its own thread and event loop.

    kopf.operator() cancels every task created while it ran when it stops, which in a shared loop
    would include the server's connection handlers; a real API server lives elsewhere anyway.
    """

    emulator_class: type[ClusterEmulator] = ClusterEmulator
    """Subclasses (benchmarks) swap in an emulator that records more."""

    def __init__(self, crds: list[dict[str, Any]]) -> None:
        self.crds = crds
        self.url = ""
        self.emu: ClusterEmulator | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="emulator", daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        emu = self.emulator_class()
        emu.setup(self.crds)
        async with emu, kmock.Server(emu) as server:
            self.emu, self.url = emu, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the emulator did not start")
        return self

    def __exit__(self, *_: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


class OperatorThread:
    """The operator in its own thread and event loop, as it would run in its own Pod."""

    def __init__(self, url: str, settings: OperatorSettings, *, peering: str | None = None,
                 priority: int = 0) -> None:
        self.url, self.settings, self.peering, self.priority = url, settings, peering, priority
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)

    def _main(self) -> None:
        url = self.url

        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url, insecure=True, default_namespace="default")

        registry = build_registry(Kube.for_url(url), self.settings, login=login)
        settings = kopf.OperatorSettings()
        settings.watching.reconnect_backoff = 0.05
        settings.scanning.disabled = True
        settings.peering.lifetime = 2  # seconds a dead leader's record blocks the others

        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(kopf.operator(
                registry=registry, settings=settings, clusterwide=True, standalone=self.peering is None,
                peering_name=self.peering, priority=self.priority))
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        asyncio.run(run())

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the operator did not start")

    def kill(self) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)


class Cluster:
    def __init__(self, url: str, session: aiohttp.ClientSession, s3: Any, s3_url: str) -> None:
        self.s3, self.s3_url = s3, s3_url
        self.api = Api(session)
        self.url = url
        self.ns = "default"
        self._operators: list[OperatorThread] = []
        self.emulator: EmulatorThread | None = None

    def pruned(self) -> list[str]:
        """Fields the API server dropped because the CRD schema does not declare them."""
        emu = self.emulator.emu if self.emulator is not None else None
        return list(emu.pruned) if emu is not None else []  # kmock handlers are falsy when empty

    # The operator
    def settings(self) -> OperatorSettings:
        return OperatorSettings(progress_interval_s=0.2, job_ttl_seconds=600, max_workers=8, notify_backoff_s=0.05)

    async def start_operator(self, **kw: Any) -> OperatorThread:
        operator = OperatorThread(self.url, self.settings(), **kw)
        await asyncio.to_thread(operator.start)
        self._operators.append(operator)
        return operator

    async def kill_operator(self, operator: OperatorThread | None = None) -> None:
        """Stop it abruptly: whatever it was doing is cut off, as when a Pod is killed."""
        for op in [operator] if operator else list(self._operators):
            await asyncio.to_thread(op.kill)
            self._operators.remove(op)

    # Objects
    async def recon(self, name: str) -> dict[str, Any] | None:
        return await self.api.get(RECONS.format(ns=self.ns) + "/" + name)

    async def create_recon(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "spaceport.dev/v1alpha1", "kind": "Reconstruction",
                "metadata": {"name": name}, "spec": spec}
        return await self.api.create(RECONS.format(ns=self.ns), body)

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> Any:
        return await self.api.patch(RECONS.format(ns=self.ns) + "/" + name, {"spec": spec})

    async def job(self, name: str) -> dict[str, Any] | None:
        return await self.api.get(JOBS.format(ns=self.ns) + "/" + name)

    async def events(self, name: str) -> list[dict[str, Any]]:
        items = (await self.api.get(f"/api/v1/namespaces/{self.ns}/events"))["items"]
        return [e for e in items if e["involvedObject"]["name"] == name]

    async def wait_events(self, name: str, reasons: set[str], timeout: float = 10.0) -> list[dict[str, Any]]:
        """The Events about ``name`` once all of ``reasons`` are among them: the operator posts them from a
        background thread, a moment after the status change they tell of."""
        async def probe() -> list[dict[str, Any]] | None:
            events = await self.events(name)
            return events if reasons <= {e["reason"] for e in events} else None

        return await eventually(probe, timeout, f"Events {sorted(reasons)} about {name}")

    async def jobs(self) -> list[dict[str, Any]]:
        return (await self.api.get(JOBS.format(ns=self.ns)))["items"]

    async def wait_status(self, name: str, check: Callable[[dict[str, Any]], bool], what: str,
                          timeout: float = 10.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            body = await self.recon(name)
            status = (body or {}).get("status") or {}
            return status if check(status) else None

        return await eventually(probe, timeout, what)

    async def wait_job(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        return await eventually(lambda: self.job(name), timeout, f"Job {name}")

    async def create_secret(self, name: str, data: dict[str, str]) -> None:
        await self.api.create(f"/api/v1/namespaces/{self.ns}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    # Storage, as a stage would write it
    def s3_put(self, uri: str, body: bytes | str) -> None:
        bucket, _, key = uri[len("s3://"):].partition("/")
        self.s3.put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)

    def s3_keys(self, uri: str) -> list[str]:
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def write_progress(self, stage_uri: str, fraction: float, message: str, eta: float | None) -> None:
        record = {"fraction": fraction, "message": message, "updated": "2026-11-25T15:00:00Z"}
        if eta is not None:
            record["etaSeconds"] = eta
        self.s3_put(f"{stage_uri}/{PROGRESS_FILE}", json.dumps(record))

    # The Job controller and kubelet, played by the test
    async def run_pod(self, job: str, exit_code: int, message: str, attempt: int = 0) -> None:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{job}-{attempt}", "labels": {"job-name": job,
                                                                  "batch.kubernetes.io/job-name": job}},
               "spec": {"containers": [{"name": "stage", "image": "x"}]}}
        await self.api.create(PODS.format(ns=self.ns), pod)
        status = {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [{
            "name": "stage", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                     "message": message, "finishedAt": f"2026-11-25T15:0{attempt}:00Z"}}}]}
        await self.api.patch(PODS.format(ns=self.ns) + f"/{job}-{attempt}/status", {"status": status})

    async def run_index_pod(self, job: str, index: int, exit_code: int | None, message: str = "",
                            attempt: int = 0) -> None:
        """A Pod of an Indexed Job's ``index`` (its ``attempt``-th): Running (``exit_code`` None), or ended."""
        name = f"{job}-{index}-{attempt}"
        labels = {"job-name": job, "batch.kubernetes.io/job-name": job,
                  "batch.kubernetes.io/job-completion-index": str(index)}
        await self.api.create(PODS.format(ns=self.ns), {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "stage", "image": "x"}]}})
        await self.end_index_pod(job, index, exit_code, message, attempt)

    async def end_index_pod(self, job: str, index: int, exit_code: int | None, message: str = "",
                            attempt: int = 0) -> None:
        """That Pod's container: running (``exit_code`` None), or ended with ``exit_code`` and ``message``."""
        state: dict[str, Any] = {"running": {"startedAt": "2026-11-25T15:00:00Z"}} if exit_code is None else {
            "terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                           "message": message, "finishedAt": f"2026-11-25T15:0{attempt}:00Z"}}
        phase = "Running" if exit_code is None else "Succeeded" if exit_code == 0 else "Failed"
        status = {"phase": phase, "containerStatuses": [{"name": "stage", "ready": exit_code is None,
                                                         "restartCount": 0, "image": "x", "imageID": "",
                                                         "state": state}]}
        await self.api.patch(PODS.format(ns=self.ns) + f"/{job}-{index}-{attempt}/status", {"status": status})

    async def patch_job_status(self, job: str, status: dict[str, Any]) -> None:
        await self.api.patch(JOBS.format(ns=self.ns) + f"/{job}/status", {"status": status})

    async def start_job(self, job: str) -> None:
        await self.api.patch(JOBS.format(ns=self.ns) + f"/{job}/status",
                             {"status": {"active": 1, "startTime": "2026-11-25T15:00:00Z"}})

    async def succeed_job(self, job: str, stage_uri: str, result: StageResult, in_storage: bool = True) -> None:
        if in_storage:
            self.s3_put(f"{stage_uri}/{RESULT_FILE}", result.to_json())
        await self.run_pod(job, 0, result.termination_message())
        await self.api.patch(JOBS.format(ns=self.ns) + f"/{job}/status", {"status": {
            "active": 0, "succeeded": 1, "completionTime": "2026-11-25T15:05:00Z",
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}})

    async def fail_job(self, job: str, reason: str, message: str, pod_message: str | None = None,
                       exit_code: int = 2) -> None:
        if pod_message is not None:
            await self.run_pod(job, exit_code, pod_message)
        await self.api.patch(JOBS.format(ns=self.ns) + f"/{job}/status", {"status": {
            "active": 0, "failed": 1,
            "conditions": [{"type": "FailureTarget", "status": "True", "reason": reason, "message": message},
                           {"type": "Failed", "status": "True", "reason": reason, "message": message}]}})


def load_crds() -> list[dict[str, Any]]:
    """Our CRD, and kopf's peering CRDs as the chart ships them."""
    peering = ROOT / "charts" / "spaceport" / "crds" / "kopf-peering.yaml"
    extra = [d for d in yaml.safe_load_all(peering.read_text()) if d] if peering.exists() else []
    return [yaml.safe_load(CRD.read_text()), *extra]


@contextlib.asynccontextmanager
async def running_cluster(s3: Any, s3_url: str, operator: bool = True) -> AsyncIterator[Cluster]:
    with EmulatorThread(load_crds()) as emulator:
        async with aiohttp.ClientSession(emulator.url) as session:
            cluster = Cluster(emulator.url, session, s3, s3_url)
            cluster.emulator = emulator
            if operator:
                await cluster.start_operator()
            try:
                yield cluster
            finally:
                await cluster.kill_operator()

"""A stand-in for the kubelet and the Job controller that runs the REAL stage command of each Job.

For every stage Job in the emulator it starts the Job's container command (``spaceport stage ...``) as a
local process with the container's environment: its ``env``, the Secret of its ``envFrom`` read from the
emulator, and the termination-message path pointed at a temp file. Volume mount points are mapped to
local folders: ``/scratch`` to a temp dir per Pod, each PersistentVolumeClaim to the folder the test gives
for its claim name. When the process ends it writes what the Job controller would: a Pod whose container
terminated with the real exit code and termination message, then the Job's status, honouring the Job's
``podFailurePolicy`` (exit code 2 fails the Job at once; a Pod with a DisruptionTarget condition does not
count against ``backoffLimit``) and ``backoffLimit`` (retries of exit code 1).

Indexed Jobs (``completionMode: Indexed``) run as the Job controller runs them: one Pod per completion index, at
most ``parallelism`` at once, each with ``JOB_COMPLETION_INDEX`` in its env and the
``batch.kubernetes.io/job-completion-index`` label and annotation; a failed index is retried alone up to
``backoffLimitPerIndex`` times (a FailIndex exit code fails it at once, a DisruptionTarget Pod is not counted), the
others go on; the Job's status keeps ``completedIndexes`` / ``failedIndexes`` ("0,2-4") and its ``succeeded`` /
``failed`` Pod counts, and once every index has ended it is Complete, or Failed with reason FailedIndexes.

Not modelled: image pulls, resource limits, the read-only root filesystem, runAsUser (the test runs as
root, so permissions on volumes cannot be tested this way), ``activeDeadlineSeconds``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.operator.harness import JOBS, PODS, Api

INDEX_KEY = "batch.kubernetes.io/job-completion-index"

SPACEPORT = str(Path(sys.executable).with_name("spaceport"))


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Attempt:
    """One Pod of a Job: the process running it and whether it was evicted."""

    pod: str
    index: int | None = None
    """Of an Indexed Job's Pod: its completion index."""
    process: asyncio.subprocess.Process | None = None
    evicted: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)


class Kubelet:
    def __init__(self, api: Api, namespace: str, volumes: dict[str, Path] | None = None, parallel: int = 3,
                 env_overrides: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        self.api, self.ns = api, namespace
        self.volumes = volumes or {}
        self.env_overrides = env_overrides or {}
        """Set over the container's env: e.g. the test suite's warm compiled-kernel cache (an image ships one)."""
        self.command = command or [SPACEPORT]
        """What the container's ``spaceport`` runs as: the installed command, or e.g. quick stand-in stages."""
        self.logs: dict[str, str] = {}
        """Pod name -> what its container printed (stdout and stderr)."""
        self.attempts: dict[str, list[Attempt]] = {}
        self._slots = asyncio.Semaphore(parallel)  # two shared cores: a few stages at a time
        self._tasks: dict[str, asyncio.Task[None]] = {}
        """By Job uid: a Job deleted and created again under its name runs again."""
        self._pods: dict[str, list[str]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="kubelet-")

    async def __aenter__(self) -> Kubelet:
        self._loop_task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *_: Any) -> None:
        tasks = [t for t in [self._loop_task, *self._tasks.values()] if t is not None]
        for attempts in self.attempts.values():
            for a in attempts:
                if a.process is not None and a.process.returncode is None:
                    a.process.kill()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tmp.cleanup()

    async def _watch(self) -> None:
        while True:
            listing = await self.api.get(JOBS.format(ns=self.ns))
            jobs = (listing or {}).get("items", [])
            await self._collect({job["metadata"]["uid"] for job in jobs})
            for job in jobs:
                uid = job["metadata"]["uid"]
                status = job.get("status") or {}
                if uid in self._tasks or job["spec"].get("suspend") or status.get("conditions"):
                    continue
                self._tasks[uid] = asyncio.create_task(self._run_job(job))
            await asyncio.sleep(0.1)

    async def _collect(self, live: set[str]) -> None:
        """The garbage collector's part: the Pods of a deleted Job go once they stopped (a namesake created later
        gets Pods of the same names, and the operator finds a Job's Pods by its name)."""
        for uid, task in self._tasks.items():
            if uid not in live and task.done():
                for pod in self._pods.pop(uid, []):
                    await self.api.delete(PODS.format(ns=self.ns) + f"/{pod}")

    def latest(self, job: str, index: int | None = None) -> Attempt:
        """The Job's latest Pod (of completion ``index``, for an Indexed Job)."""
        return [a for a in self.attempts[job] if index is None or a.index == index][-1]

    async def evict(self, job: str, index: int | None = None) -> Attempt:
        """Preempt the Job's running Pod (of ``index``): DisruptionTarget, then SIGTERM (the stage checkpoints and
        exits)."""
        attempt = self.latest(job, index)
        await attempt.started.wait()
        attempt.evicted = True
        await self.api.patch(PODS.format(ns=self.ns) + f"/{attempt.pod}/status", {"status": {"conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
             "message": "evicted to make room for a higher-priority Pod"}]}})
        assert attempt.process is not None
        attempt.process.send_signal(signal.SIGTERM)
        return attempt

    async def kill(self, job: str, index: int | None = None, sig: int = signal.SIGTERM) -> Attempt:
        """Signal the Job's running Pod (of ``index``) with no DisruptionTarget: a failure that counts (an OOM kill,
        a node's crash)."""
        attempt = self.latest(job, index)
        await attempt.started.wait()
        assert attempt.process is not None
        attempt.process.send_signal(sig)
        return attempt

    async def _run_job(self, job: dict[str, Any]) -> None:
        if job["spec"].get("completionMode") == "Indexed":
            await IndexedRun(self, job).run()
            return
        name = job["metadata"]["name"]
        path = JOBS.format(ns=self.ns) + f"/{name}/status"
        backoff_limit = int(job["spec"].get("backoffLimit", 6))
        fail_codes = _fail_job_codes(job)
        failures = 0
        await self.api.patch(path, {"status": {"active": 1, "startTime": now_iso()}})
        self.attempts[name] = []
        while True:
            attempt = Attempt(pod=f"{name}-{len(self.attempts[name])}")
            self.attempts[name].append(attempt)
            self._pods.setdefault(job["metadata"]["uid"], []).append(attempt.pod)
            code, _ = await self._run_pod(job, attempt)
            if code == 0:
                await self.api.patch(path, {"status": {"active": 0, "succeeded": 1, "completionTime": now_iso(),
                                                       "conditions": _conditions("Complete", None, None)}})
                return
            if attempt.evicted:
                continue  # podFailurePolicy: DisruptionTarget -> Ignore, a new Pod without counting a failure
            failures += 1
            if code in fail_codes:
                why = (f"Container stage for pod {self.ns}/{attempt.pod} failed with exit code {code} matching "
                       "FailJob rule at index 0")
                await self._fail(path, failures, "PodFailurePolicy", why)
                return
            if failures > backoff_limit:
                await self._fail(path, failures, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
                return
            await self.api.patch(path, {"status": {"failed": failures}})

    async def _fail(self, path: str, failures: int, reason: str, message: str) -> None:
        await self.api.patch(path, {"status": {"active": 0, "failed": failures,
                                               "conditions": _conditions("Failed", reason, message)}})

    async def _run_pod(self, job: dict[str, Any], attempt: Attempt) -> tuple[int, str]:
        pod_spec = job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        metadata: dict[str, Any] = {"name": attempt.pod, "labels": {**job["spec"]["template"]["metadata"]["labels"],
                                                                    "job-name": job["metadata"]["name"]}}
        if attempt.index is not None:
            index = {INDEX_KEY: str(attempt.index)}
            metadata["labels"].update(index, **{"batch.kubernetes.io/job-name": job["metadata"]["name"]})
            metadata["annotations"] = dict(index)
        await self.api.create(PODS.format(ns=self.ns), {
            "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": container["name"], "image": container["image"]}]}})
        pod_dir = Path(self._tmp.name) / attempt.pod
        mounts = self._mounts(pod_spec, container, pod_dir)
        termination_log = pod_dir / "termination-log"
        env = await self._env(container, mounts)
        env["SPACEPORT_TERMINATION_LOG"] = str(termination_log)
        if attempt.index is not None:
            env["JOB_COMPLETION_INDEX"] = str(attempt.index)
        argv = [_map(a, mounts) for a in [*container["command"], *container.get("args", [])]]
        if argv[0] == "spaceport":
            argv[:1] = self.command
        async with self._slots:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            attempt.process = process
            await self.api.patch(PODS.format(ns=self.ns) + f"/{attempt.pod}/status", {"status": {
                "phase": "Running", "startTime": now_iso()}})
            attempt.started.set()
            out, _ = await process.communicate()
        self.logs[attempt.pod] = out.decode(errors="replace")
        code = process.returncode if process.returncode is not None else 1
        code = 128 - code if code < 0 else code  # killed by a signal: the shell convention Kubernetes reports
        message = termination_log.read_text()[:4096] if termination_log.exists() else ""
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "finishedAt": now_iso()}
        if message:
            terminated["message"] = message
        await self.api.patch(PODS.format(ns=self.ns) + f"/{attempt.pod}/status", {"status": {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": container["name"], "ready": False, "restartCount": 0,
                                   "image": container["image"], "imageID": "",
                                   "state": {"terminated": terminated}}]}})
        return code, message

    def _mounts(self, pod_spec: dict[str, Any], container: dict[str, Any], pod_dir: Path) -> dict[str, Path]:
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                local = pod_dir / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
            else:
                local = self.volumes[volume["persistentVolumeClaim"]["claimName"]]
            mounts[mount["mountPath"]] = local
        return mounts

    async def _env(self, container: dict[str, Any], mounts: dict[str, Path]) -> dict[str, str]:
        # No instance metadata service here: without this boto3 would wait on it when a Secret holds no keys.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_EC2_METADATA_DISABLED": "true"}
        if os.environ.get("PYTHONPATH"):  # the checkout under test, where it is not the one installed
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        for source in container.get("envFrom", []):
            ref = source.get("secretRef")
            if not ref:
                continue
            secret = await self.api.get(f"/api/v1/namespaces/{self.ns}/secrets/{ref['name']}")
            if secret is None:
                if ref.get("optional"):
                    continue
                raise AssertionError(f"Secret {ref['name']} missing: the Pod would never start")
            env.update({k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()})
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = _map(var["value"], mounts)
        return {**env, **self.env_overrides}


def _map(text: str, mounts: dict[str, Path]) -> str:
    """A container path -> the local folder that plays its volume."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if text == mount_path or text.startswith(mount_path + "/"):
            return str(mounts[mount_path]) + text[len(mount_path):]
    return text


def _fail_job_codes(job: dict[str, Any], action: str = "FailJob") -> set[int]:
    codes: set[int] = set()
    for rule in (job["spec"].get("podFailurePolicy") or {}).get("rules", []):
        exits = rule.get("onExitCodes")
        if rule.get("action") == action and exits and exits.get("operator") == "In":
            codes.update(exits["values"])
    return codes


def _conditions(kind: str, reason: str | None, message: str | None) -> list[dict[str, Any]]:
    extra = {k: v for k, v in (("reason", reason), ("message", message)) if v}
    first = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
    return [{"type": first, "status": "True", **extra}, {"type": kind, "status": "True", **extra}]


def interval_list(indexes: set[int]) -> str:
    """Indexes as the Job controller writes ``completedIndexes``: ascending, three or more consecutive ones as
    "first-last", two as "a,b" ({0, 1, 3, 4, 5, 7} -> "0,1,3-5,7")."""
    runs: list[list[int]] = []
    for i in sorted(indexes):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a},{b}" if b == a + 1 else f"{a}-{b}" for a, b in runs)


class IndexedRun:
    """The Job controller's part for one Indexed Job: a Pod per completion index, ``parallelism`` at a time, each
    index retried alone up to ``backoffLimitPerIndex`` failures (FailIndex exit codes: none), the Job's status
    written after every Pod."""

    def __init__(self, kubelet: Kubelet, job: dict[str, Any]) -> None:
        spec = job["spec"]
        if spec.get("backoffLimitPerIndex") is None:
            raise NotImplementedError("an Indexed Job without backoffLimitPerIndex (one backoffLimit for all indexes)")
        self.kubelet, self.job = kubelet, job
        self.name = job["metadata"]["name"]
        self.path = JOBS.format(ns=kubelet.ns) + f"/{self.name}/status"
        self.completions = int(spec["completions"])
        self.limit = int(spec["backoffLimitPerIndex"])
        self.fail_codes = _fail_job_codes(job, "FailIndex")
        self.parallel = asyncio.Semaphore(int(spec.get("parallelism", 1)))
        self.completed: set[int] = set()
        self.failed: set[int] = set()
        self.failures: dict[int, int] = {}
        self.active = self.succeeded = self.failed_pods = 0

    async def run(self) -> None:
        self.kubelet.attempts[self.name] = []
        await self.kubelet.api.patch(self.path, {"status": {"startTime": now_iso(), **self._counts()}})
        await asyncio.gather(*(self._index(i) for i in range(self.completions)))
        if self.failed:
            await self._patch(conditions=_conditions("Failed", "FailedIndexes", "Job has failed indexes"))
        else:
            await self._patch(completionTime=now_iso(), conditions=_conditions("Complete", None, None))

    async def _index(self, index: int) -> None:
        while True:
            async with self.parallel:  # the controller creates Pods for at most `parallelism` indexes at once
                attempts = self.kubelet.attempts[self.name]
                tries = sum(a.index == index for a in attempts)
                attempt = Attempt(pod=f"{self.name}-{index}-{tries}", index=index)
                attempts.append(attempt)
                self.kubelet._pods.setdefault(self.job["metadata"]["uid"], []).append(attempt.pod)
                self.active += 1
                await self._patch()
                code, _ = await self.kubelet._run_pod(self.job, attempt)
                self.active -= 1
            if code == 0:
                self.succeeded += 1
                self.completed.add(index)
                await self._patch()
                return
            if attempt.evicted:  # podFailurePolicy: DisruptionTarget -> Ignore, a new Pod, no failure counted
                await self._patch()
                continue
            self.failed_pods += 1
            self.failures[index] = self.failures.get(index, 0) + 1
            if code in self.fail_codes or self.failures[index] > self.limit:
                self.failed.add(index)
                await self._patch()
                return
            await self._patch()

    def _counts(self) -> dict[str, Any]:
        return {"active": self.active, "succeeded": self.succeeded, "failed": self.failed_pods,
                "completedIndexes": interval_list(self.completed), "failedIndexes": interval_list(self.failed)}

    async def _patch(self, **extra: Any) -> None:
        await self.kubelet.api.patch(self.path, {"status": {**self._counts(), **extra}})


"""Observe: what the cluster and storage hold for a Reconstruction, read and never changed.

A pass observes, decides (``decide.py``, pure) and acts (``act.py``). Everything here only reads: the stage's
Job, its Pods' termination messages, the credentials Secret's key names, and (on S3) progress.json, result.json
and the output's owner record. What to read follows the status the pass holds: a stage about to get its Job
reads the Secret, a finished one its result, a running one its progress.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from spaceport.api import Phase, ReconstructionSpec, ReconstructionStatus, StageStatus, is_s3_uri
from spaceport.api.reconstruction import Usage
from spaceport.api.stages import TRAIN
from spaceport.contract import FailureRecord, ProgressRecord, StageResult, parse_termination
from spaceport.controller.blocks import BlockView, IndexPods, index_pods, parse_indexes, step_job
from spaceport.controller.jobs import CONTAINER, credentials_secret, queue_name
from spaceport.controller.k8s import Kube
from spaceport.controller.progress import OutputView, StorageReader
from spaceport.controller.settings import OperatorSettings
from spaceport.controller.usage import requested, stage_usage
from spaceport.layout import join, stage_uri

log = logging.getLogger("spaceport.operator")


@dataclass(frozen=True)
class JobView:
    """What the reconciler needs to know about a stage's Job."""

    name: str
    suspended: bool
    active: int
    succeeded: bool
    failed: bool
    reason: str | None = None
    message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    failed_at: str | None = None
    cpus: float = 0.0
    gpus: float = 0.0
    completed_indexes: frozenset[int] = frozenset()
    failed_indexes: frozenset[int] = frozenset()
    """An Indexed Job's finished indexes (partitioned training's blocks)."""

    @classmethod
    def of(cls, job: dict[str, Any]) -> JobView:
        status = job.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = conditions.get("Failed")
        cpus, gpus = requested(job)
        # An Indexed Job holds up to its parallelism's Pods at once: reserved, an upper bound of what it used.
        pods = max(1, int((job.get("spec") or {}).get("parallelism") or 1))
        return cls(
            name=job["metadata"]["name"],
            suspended=bool((job.get("spec") or {}).get("suspend")),
            active=int(status.get("active") or 0),
            succeeded="Complete" in conditions,
            failed=failed is not None,
            reason=failed.get("reason") if failed else None,
            message=failed.get("message") if failed else None,
            start_time=status.get("startTime"),
            completion_time=status.get("completionTime"),
            failed_at=failed.get("lastTransitionTime") if failed else None,
            cpus=cpus * pods,
            gpus=gpus * pods,
            completed_indexes=parse_indexes(status.get("completedIndexes")),
            failed_indexes=parse_indexes(status.get("failedIndexes")),
        )

    def usage(self, now: str) -> Usage | None:
        return stage_usage(self.start_time, self.completion_time or self.failed_at or now, self.cpus, self.gpus)

    @property
    def finished(self) -> bool:
        return self.succeeded or self.failed


@dataclass(frozen=True)
class SecretView:
    """The storage credentials Secret the spec names: its key names only (values are never read into status)."""

    namespace: str
    name: str
    field: str
    """The spec field that names it (spec.input.credentialsSecret or spec.output.credentialsSecret)."""
    keys: frozenset[str] | None
    """None: the Secret does not exist (yet)."""


@dataclass(frozen=True)
class Observation:
    """One stage, as seen now. ``job`` is None when the Job does not exist or, for a stage whose Job is still to
    be created, was not looked at (its creation adopts one that exists)."""

    stage: str
    job: JobView | None
    result: StageResult | None = None
    failure: FailureRecord | None = None
    progress: ProgressRecord | None = None
    queue: str | None = None
    """The Kueue LocalQueue of the Job: a suspended Job there waits for admission (Queued)."""
    secret: SecretView | None = None
    """The credentials Secret, looked at before a Job is created (None: none named, or not looked at)."""
    blocks: tuple[BlockView, ...] | None = None
    """Partitioned training, while its blocks train: each block as its Indexed Job, Pods and progress.json say
    (None: not partitioned, or merging; ``job`` is then the merge Job)."""


def creates_job(status: ReconstructionStatus, stage: str, queue: str | None) -> bool:
    """Whether the stage's Job is still to be created: Pending, or held back (deleted) while queued and suspended."""
    phase = status.stages.get(stage, StageStatus()).phase
    return phase == Phase.PENDING or (bool(queue) and phase == Phase.SUSPENDED)


HOLDABLE = (Phase.PENDING, Phase.QUEUED, Phase.RUNNING, Phase.SUSPENDED)


class Observer:
    """Reads; never creates, patches or deletes anything."""

    def __init__(self, kube: Kube, settings: OperatorSettings, storage: StorageReader) -> None:
        self.kube, self.settings, self.storage = kube, settings, storage

    def output(self, namespace: str, spec: ReconstructionSpec) -> OutputView | None:
        """The output prefix's owner record and run folders; None where the operator cannot read it (volumes)."""
        return self.storage.output_view(namespace, spec)

    def stage(self, namespace: str, spec: ReconstructionSpec, status: ReconstructionStatus, stage: str,
              job_seen: dict[str, Any] | None = None) -> Observation:
        """The current stage's Job and what it wrote. ``job_seen``: the Job as an event (or our own create)
        just delivered it, used instead of a GET when it is this stage's Job."""
        sst = status.stages.get(stage, StageStatus())
        queue = queue_name(spec, self.settings)
        job_name = step_job(sst) or ""
        partitioned = bool(sst.blocks) and job_name == sst.job
        holding = bool(queue) and spec.suspend and sst.phase in HOLDABLE
        if job_seen is not None and job_seen["metadata"].get("name") == job_name:
            raw: dict[str, Any] | None = job_seen
        elif sst.phase == Phase.PENDING or (creates_job(status, stage, queue) and not holding):
            # Not looked at: creating it adopts one that exists (one call, not two).
            secret = None if holding else self.secret(namespace, spec)
            return Observation(stage, None, queue=queue, secret=secret)
        else:
            raw = self.kube.get_job(namespace, job_name)
        uri = stage_uri(spec.output.uri, status.run or 0, stage)
        if partitioned:
            return self._blocks(namespace, spec, stage, raw, uri, len(sst.blocks), queue, holding)
        if raw is None:  # vanished: finished before its TTL ran out while we were away?
            return Observation(stage, None, result=self.storage.read_result(namespace, spec, uri), queue=queue)
        job = JobView.of(raw)
        if job.succeeded:
            return Observation(stage, job, result=self._result(namespace, spec, job.name, uri), queue=queue)
        if job.failed:
            return Observation(stage, job, failure=self._failure(namespace, job.name), queue=queue)
        progress = None if job.suspended or holding else self.storage.read_progress(namespace, spec, uri)
        return Observation(stage, job, progress=progress, queue=queue)

    def _blocks(self, ns: str, spec: ReconstructionSpec, stage: str, raw: dict[str, Any] | None, uri: str,
                count: int, queue: str | None, holding: bool) -> Observation:
        """A partitioned stage's Indexed Job, each block's Pods and, for blocks training now, their progress.json.
        Vanished (its TTL ran out while we were away?): the blocks whose result.json storage holds are done."""
        if raw is None:
            done = [i for i in range(count)
                    if self.storage.read_result(ns, spec, join(uri, TRAIN.files.block(i))) is not None]
            return Observation(stage, None, queue=queue, blocks=tuple(BlockView(i, completed=i in done)
                                                                      for i in range(count)))
        job = JobView.of(raw)
        pods = index_pods(self.kube.list_job_pods(ns, job.name))
        views = []
        for i in range(count):
            view = BlockView(i, i in job.completed_indexes, i in job.failed_indexes, pods.get(i, IndexPods()))
            if view.pods.live and not (view.completed or view.failed or job.suspended or holding):
                view = replace(view, progress=self.storage.read_progress(ns, spec, join(uri, TRAIN.files.block(i))))
            views.append(view)
        failure = next((v.pods.failure for v in views if v.failed and v.pods.failure), None)
        return Observation(stage, job, failure=failure if job.failed else None, queue=queue, blocks=tuple(views))

    def secret(self, namespace: str, spec: ReconstructionSpec) -> SecretView | None:
        """The storage Secret the spec names, for S3 locations; key names only."""
        name, named = credentials_secret(spec, self.settings)
        if name is None or not named or not (is_s3_uri(spec.input.uri) or is_s3_uri(spec.output.uri)):
            return None
        field = "spec.input.credentialsSecret" if spec.input.credentials_secret else "spec.output.credentialsSecret"
        try:
            data, _ = self.kube.read_secret(namespace, name)
        except ApiException as e:
            if e.status == 404:
                return SecretView(namespace, name, field, None)
            raise
        return SecretView(namespace, name, field, frozenset(data))

    def _result(self, ns: str, spec: ReconstructionSpec, job: str, uri: str) -> StageResult | None:
        """result.json when storage is readable (complete), else the Pod's termination message (compact)."""
        result = self.storage.read_result(ns, spec, uri)
        if result is not None:
            return result
        for message in self._termination_messages(ns, job, succeeded=True):
            parsed = parse_termination(message, succeeded=True)
            if isinstance(parsed, StageResult):
                return parsed
        return None

    def _failure(self, ns: str, job: str) -> FailureRecord | None:
        for message in self._termination_messages(ns, job, succeeded=False):
            parsed = parse_termination(message, succeeded=False)
            if isinstance(parsed, FailureRecord):
                return parsed
        return None

    def _termination_messages(self, ns: str, job: str, succeeded: bool) -> list[str]:
        messages: list[tuple[str, str]] = []
        for pod in self.kube.list_job_pods(ns, job):
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated") or {}
                if cs.get("name") != CONTAINER or not term.get("message"):
                    continue
                if (term.get("exitCode") == 0) == succeeded:
                    messages.append((term.get("finishedAt") or "", term["message"]))
        return [m for _, m in sorted(messages, reverse=True)]  # the latest attempt first

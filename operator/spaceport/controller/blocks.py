"""Partitioned training, the operator's side: pure functions (no API calls) over an Indexed Job and its Pods.

When the SfM model is large (``spec.train.blocks``, or ``blockMaxImages`` registered photos per block), the train
stage runs as two Jobs: an Indexed Job of K completions, one Pod and GPU per spatial block
(``spaceport stage train --blocks K`` trains block ``$JOB_COMPLETION_INDEX`` into ``train/blocks/<i>/``), then a
merge Job (``--blocks K --merge``) that writes the train folder itself. Kubernetes does the distribution: a
failed block is retried alone (``backoffLimitPerIndex``), and a block whose result.json matches its inputs is not
trained again, so a re-created Indexed Job (a retry) redoes only unfinished blocks.

K is decided once, from the sfm stage's ``registeredImages``, and recorded in status (one entry per block) before
the Indexed Job exists, like Job names: a restarted operator builds the same Job. Blocks that have all succeeded
mean the merge step: its Job is created in the same decision that sees the Indexed Job complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spaceport.api import TRAIN, Phase, ReconstructionSpec, ReconstructionStatus
from spaceport.api.reconstruction import BlockStatus, StageStatus
from spaceport.contract import FailureRecord, ProgressRecord, parse_termination
from spaceport.controller.naming import MERGE, job_name

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
"""The completion index of an Indexed Job's Pod: a label since Kubernetes 1.28, an annotation before."""

BLOCKS_SHARE = 0.9
"""Share of the train stage's progress that training the blocks takes; the merge takes the rest."""

CONTAINER = "stage"


def parse_indexes(text: str | None) -> frozenset[int]:
    """A Job's ``completedIndexes`` or ``failedIndexes`` ("1,3-5,7") as a set of indexes."""
    found: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            found.update(range(int(first), int(last or first) + 1))
        except ValueError:
            continue
    return frozenset(found)


@dataclass(frozen=True)
class IndexPods:
    """What one index's Pods say: whether one is alive (Pending or Running), how many failed, the latest failure."""

    live: bool = False
    failures: int = 0
    failure: FailureRecord | None = None


@dataclass(frozen=True)
class BlockView:
    """One block as observed: from the Indexed Job's status, its Pods and its progress.json."""

    index: int
    completed: bool = False
    failed: bool = False
    pods: IndexPods = IndexPods()
    progress: ProgressRecord | None = None


def pod_index(pod: Mapping[str, Any]) -> int | None:
    meta = pod.get("metadata") or {}
    value = (meta.get("labels") or {}).get(INDEX_KEY) or (meta.get("annotations") or {}).get(INDEX_KEY)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _failure(pod: Mapping[str, Any]) -> tuple[str, FailureRecord]:
    """(when, what) of a failed Pod: its termination message's failure record, else its exit code and reason."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or {}
        if cs.get("name") != CONTAINER or not term:
            continue
        parsed = parse_termination(term["message"], succeeded=False) if term.get("message") else None
        if isinstance(parsed, FailureRecord):
            return term.get("finishedAt") or "", parsed
        what = f"exit code {term.get('exitCode')}" + (f" ({term['reason']})" if term.get("reason") else "")
        return term.get("finishedAt") or "", FailureRecord(stage=TRAIN.name, reason="", message=what)
    reason = (pod.get("status") or {}).get("reason") or "Pod failed"
    return "", FailureRecord(stage=TRAIN.name, reason="", message=str(reason))


def _disrupted(pod: Mapping[str, Any]) -> bool:
    """A Pod evicted or preempted (DisruptionTarget): the Job's podFailurePolicy ignores it, so it is no failure."""
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def index_pods(pods: Iterable[Mapping[str, Any]]) -> dict[int, IndexPods]:
    """The Indexed Job's Pods, summed up per completion index (a disrupted Pod, which Kubernetes replaces without
    counting it against backoffLimitPerIndex, is not a failure)."""
    live: set[int] = set()
    failures: dict[int, list[tuple[str, FailureRecord]]] = {}
    for pod in pods:
        index = pod_index(pod)
        if index is None:
            continue
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Pending", "Running") and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            live.add(index)
        elif phase == "Failed" and not _disrupted(pod):
            failures.setdefault(index, []).append(_failure(pod))
    return {i: IndexPods(i in live, len(failures.get(i, [])), max(failures[i], key=lambda f: f[0])[1]
                         if failures.get(i) else None)
            for i in live | set(failures)}


def block_count(spec: ReconstructionSpec, status: ReconstructionStatus) -> int:
    """Blocks the run's training is split into: from spec.train and the sfm stage's registeredImages (unknown: 0,
    so only an explicit ``blocks`` partitions)."""
    registered = status.stages.get("sfm", StageStatus()).metrics.get("registeredImages")
    count = int(registered) if isinstance(registered, int | float) else 0
    return spec.stage_options(TRAIN.name).block_count(count)  # type: ignore[union-attr]


def plan(status: ReconstructionStatus, spec: ReconstructionSpec, stage: str,
         recon: str) -> ReconstructionStatus | None:
    """Status with the train stage's blocks and merge Job recorded, when its Job is about to be created and K >= 2
    is not recorded yet; None otherwise (not training, already decided, or one block: today's single Job)."""
    sst = status.stages.get(stage, StageStatus())
    if stage != TRAIN.name or sst.blocks or status.run is None:
        return None
    count = block_count(spec, status)
    if count < 2:
        return None
    attempt = sst.attempt or 1
    planned = sst.model_copy(update={"blocks": [BlockStatus(index=i) for i in range(count)],
                                     "merge_job": job_name(recon, status.run, stage, attempt, MERGE),
                                     "message": f"{count} blocks"})
    return status.model_copy(update={"stages": {**status.stages, stage: planned}})


def retried(old: StageStatus, new: StageStatus, name: str, run: int, stage: str) -> StageStatus:
    """A partitioned stage's next attempt keeps its blocks and the ones that succeeded (the stage skips them): a new
    Indexed Job for the others, or, every block done (the merge failed), a new merge Job alone."""
    if not old.blocks:
        return new
    done = merging(old)
    kept = [b if b.phase == Phase.SUCCEEDED else BlockStatus(index=b.index) for b in old.blocks]
    return new.model_copy(update={"blocks": kept, "job": old.job if done else new.job,
                                  "merge_job": job_name(name, run, stage, new.attempt or 1, MERGE),
                                  "usage": old.usage if done else None})


def merging(sst: StageStatus) -> bool:
    """A partitioned stage whose blocks have all succeeded: its merge Job is (to be) running."""
    return bool(sst.blocks) and all(b.phase == Phase.SUCCEEDED for b in sst.blocks)


def step_job(sst: StageStatus) -> str | None:
    """The Job the stage waits on now: the merge Job once every block succeeded, else the stage's Job."""
    return sst.merge_job if merging(sst) else sst.job


def stage_fraction(sst: StageStatus, merge_fraction: float) -> float:
    """The stage's fraction done while its merge Job has done ``merge_fraction`` (unpartitioned: the same)."""
    return BLOCKS_SHARE + (1 - BLOCKS_SHARE) * merge_fraction if sst.blocks else merge_fraction


def failed_block(views: Iterable[BlockView]) -> BlockView | None:
    return next((v for v in views if v.failed), None)


def describe(view: BlockView) -> str:
    """``block <i>: <reason: message>`` of a block's latest failure."""
    what = view.pods.failure.describe() if view.pods.failure else "failed"
    return f"block {view.index}: {what}"


def _block(old: BlockStatus, view: BlockView) -> BlockStatus:
    # A block that succeeded stays so: its result.json is kept, and a re-created Job skips it.
    if view.completed or old.phase == Phase.SUCCEEDED:
        return BlockStatus(index=old.index, phase=Phase.SUCCEEDED, progress=1.0, message="done",
                           failures=view.pods.failures)
    update: dict[str, Any] = {"failures": view.pods.failures}
    if view.failed:
        update.update(phase=Phase.FAILED, eta_seconds=None, message=describe(view))
    elif view.pods.live:
        update["phase"] = Phase.RUNNING
        if view.progress is not None:
            update.update(progress=view.progress.fraction, eta_seconds=view.progress.eta_seconds,
                          message=view.progress.message or old.message)
    else:
        update.update(phase=Phase.PENDING, eta_seconds=None)
        if view.pods.failure is not None:
            update["message"] = f"retrying after {view.pods.failures} failure(s): {view.pods.failure.describe()}"
    return old.model_copy(update=update)


def fold(sst: StageStatus, views: Iterable[BlockView]) -> StageStatus:
    """The stage with its blocks updated from what was observed, its progress and ETA aggregated from them."""
    seen = {v.index: v for v in views}
    blocks = [_block(b, seen.get(b.index, BlockView(b.index))) for b in sst.blocks]
    done = sum(b.phase == Phase.SUCCEEDED for b in blocks)
    running = [b for b in blocks if b.phase == Phase.RUNNING]
    failed = [b for b in blocks if b.phase == Phase.FAILED]
    waiting = len(blocks) - done - len(running) - len(failed)
    fraction = sum(1.0 if b.phase == Phase.SUCCEEDED else b.progress or 0.0 for b in blocks) / len(blocks)
    etas = [b.eta_seconds for b in running if b.eta_seconds is not None]
    # Blocks still waiting for a Pod make the end unknowable from these alone.
    eta = max(etas) if etas and len(etas) == len(running) and not waiting else None
    parts = [f"blocks: {done}/{len(blocks)} done", f"{len(running)} training"]
    if waiting:
        parts.append(f"{waiting} waiting")
    retried = sum(b.failures for b in blocks)
    if retried:
        parts.append(f"{retried} Pod failure(s) retried")
    if failed:
        parts.append(f"failed: {'; '.join(b.message or f'block {b.index}' for b in failed)}")
    return sst.model_copy(update={"blocks": blocks, "progress": round(BLOCKS_SHARE * fraction, 4),
                                  "eta_seconds": eta, "message": ", ".join(parts)})

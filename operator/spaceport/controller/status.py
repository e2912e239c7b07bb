"""Pure status computation: (status, spec, what was observed) -> the next status. No API calls here.

The reconciler observes one stage's Job at a time; these functions say what that means for the
Reconstruction. The status is built in memory and written in one place (``reconcile.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from spaceport.api import (
    COMPRESS,
    PIPELINE,
    STAGES,
    Condition,
    Metrics,
    Phase,
    Reason,
    ReconstructionSpec,
    ReconstructionStatus,
)
from spaceport.api.reconstruction import StageStatus
from spaceport.contract import OutputInUseError
from spaceport.controller import blocks
from spaceport.controller.naming import job_name
from spaceport.controller.observe import JobView, Observation
from spaceport.controller.usage import add_usage
from spaceport.layout import join, merge_metrics, overall_fraction, run_uri, spec_run_key, stage_uri

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)

METRIC_KEYS: dict[str, str] = {
    "imagesUsed": "images",
    "imagesFound": "images_found",
    "registeredImages": "registered_images",
    "gaussians": "gaussians",
    "psnr": "psnr",
    "ssim": "ssim",
    "lpips": "lpips",
    "plyBytes": "ply_bytes",
    "sogBytes": "sog_bytes",
    "compressionRatio": "compression_ratio",
    "psnrDropDb": "psnr_drop_db",
}
"""Stage metric key (camelCase, as the stages write result.json) -> overall Metrics field. A test feeds a real
stage's result.json through this (tests/cli/test_run.py), so a renamed metric cannot drift silently."""

STAGE_SECONDS = "durationSeconds"
"""Key of a stage's wall time among its metrics in status (the result's own durationSeconds)."""

CONDITION_TYPES = ("Ready", "Succeeded", "Failed", "Reconciling", "Stalled")
"""Ready/Succeeded/Failed as batch Jobs have them (``kubectl wait --for=condition=...``); Reconciling/Stalled for
kstatus (Flux, Argo CD's generic health). Each carries the generation it speaks for."""


def current_stage(status: ReconstructionStatus) -> str | None:
    """The first stage of the run that has not succeeded; None when all have."""
    for stage in STAGES:
        if status.stages.get(stage, StageStatus()).phase != Phase.SUCCEEDED:
            return stage
    return None


def is_settled(status: ReconstructionStatus, generation: int | None) -> bool:
    """Nothing left to do until the spec changes: the run ended and this generation was seen."""
    return status.phase in TERMINAL and status.observed_generation == generation


def start_run(status: ReconstructionStatus, spec: ReconstructionSpec, name: str, generation: int | None,
              now: str, stored: int = 0, why: str | None = None) -> ReconstructionStatus:
    """A new run with every Job name decided up front, so a restart never invents different names.

    Its number follows both status's last run and ``stored``, the highest run folder the output already holds (a
    re-created Reconstruction, or another object's runs): a run folder is never reused. ``why``: said after "run
    n started" in the message.
    """
    run = max(status.run or 0, stored) + 1
    stages = {s: StageStatus(job=job_name(name, run, s)) for s in STAGES}
    return with_conditions(status.model_copy(update={
        "phase": Phase.PENDING, "reason": Reason.CREATED, "message": f"run {run} started" + (f": {why}" if why else ""),
        "stage": STAGES[0], "progress": 0.0, "run": run, "run_key": spec_run_key(spec),
        "run_uri": run_uri(spec.output.uri, run), "stages": stages, "metrics": Metrics(), "outputs": {},
        "observed_generation": generation,
    }), now)


def retry_run(status: ReconstructionStatus, name: str, value: str, generation: int | None,
              now: str) -> ReconstructionStatus:
    """Go on with a Failed run from the stage that failed (annotation spaceport.dev/retry set to ``value``).

    Finished stages keep their results; the failed stage gets a new attempt and Job name, decided here, before its
    Job exists. On anything else (nothing failed, or an invalid spec, which only a spec change fixes) the value is
    only noted, so that it cannot trigger a retry of a later failure.
    """
    failed = next((s for s in STAGES if status.stages.get(s, StageStatus()).phase == Phase.FAILED), None)
    if status.phase != Phase.FAILED or failed is None or status.run is None \
            or status.reason in (Reason.INVALID_SPEC, Reason.OUTPUT_IN_USE):
        return status.model_copy(update={"retry": value})
    stages = dict(status.stages)
    attempt = (stages[failed].attempt or 1) + 1
    fresh = StageStatus(job=job_name(name, status.run, failed, attempt), attempt=attempt)
    stages[failed] = blocks.retried(stages[failed], fresh, name, status.run, failed)
    kept = [s for s in STAGES if stages.get(s, StageStatus()).phase == Phase.SUCCEEDED]
    return with_conditions(status.model_copy(update={
        "phase": Phase.PENDING, "reason": Reason.RETRYING, "stage": failed, "retry": value, "stages": stages,
        "message": f"run {status.run}: retrying {failed} (attempt {attempt})"
                   + (f"; kept {', '.join(kept)}" if kept else ""),
        "progress": overall_progress(stages), "metrics": Metrics(), "outputs": {}, "notification": None,
        "observed_generation": generation,
    }), now)


def invalid_spec(status: ReconstructionStatus, message: str, generation: int | None,
                 now: str, reason: Reason = Reason.INVALID_SPEC) -> ReconstructionStatus:
    # The run's Jobs are deleted with an invalid spec: none of its stages may go on saying Running.
    stages = {name: s.model_copy(update={"phase": Phase.FAILED, "message": "stopped: the spec became invalid",
                                         "eta_seconds": None, "finished_at": s.finished_at or now})
              if s.phase in (Phase.RUNNING, Phase.SUSPENDED) else s for name, s in status.stages.items()}
    return with_conditions(status.model_copy(update={
        "phase": Phase.FAILED, "reason": reason, "message": message, "progress": None,
        "observed_generation": generation, "stages": stages,
    }), now)


def next_status(status: ReconstructionStatus, spec: ReconstructionSpec, obs: Observation,
                generation: int | None, now: str, *, held: bool = False,
                problem: tuple[Reason, str] | None = None) -> ReconstructionStatus:
    """Fold one stage's observation into the status. ``held``: no Job on purpose (suspended while queued: the Job
    is deleted so Kueue frees its quota). ``problem``: why the Job is not created (WaitingForSecret: Pending;
    BadCredentials: Failed)."""
    stage = obs.stage
    stages = dict(status.stages)
    st = stages.get(stage, StageStatus())
    update: dict[str, Any] = {"observed_generation": generation, "stage": stage}
    job = obs.job

    if problem is not None:
        reason, message = problem
        phase = Phase.FAILED if reason == Reason.BAD_CREDENTIALS else Phase.PENDING
        if phase == Phase.FAILED:
            stages[stage] = st.model_copy(update={"phase": Phase.FAILED, "message": message, "finished_at": now})
        update.update(stages=stages, phase=phase, reason=reason, message=message)
        return with_conditions(status.model_copy(update=update), now)
    if held:
        stages[stage] = st.model_copy(update={"phase": Phase.SUSPENDED, "eta_seconds": None})
        update.update(stages=stages, phase=Phase.SUSPENDED, reason=Reason.SUSPENDED, progress=overall_progress(stages),
                      message=f"{stage} suspended: its Job is deleted and goes back into queue {obs.queue} on resume")
        return with_conditions(status.model_copy(update=update), now)
    if job is None and st.phase == Phase.PENDING:
        return with_conditions(status.model_copy(update=update), now)  # not created yet: the reconciler creates it
    if obs.blocks is not None:  # partitioned training, its blocks' Indexed Job
        views = obs.blocks if job is None or not job.succeeded else tuple(replace(v, completed=True)
                                                                          for v in obs.blocks)
        st = blocks.fold(st, views)
        if blocks.merging(st):
            return _merging(status, st, job, update, now)
    elif (job is not None and job.succeeded) or (job is None and obs.result is not None):
        return _succeeded(status, spec, _stage_succeeded(st, obs, job, now), update, now)
    if job is None:
        message = f"{stage}: Job {blocks.step_job(st)} disappeared before it finished and left no result.json"
        stages[stage] = st.model_copy(update={"phase": Phase.FAILED, "finished_at": now, "message": message,
                                              "eta_seconds": None})
        update.update(stages=stages, phase=Phase.FAILED, reason=Reason.JOB_VANISHED, message=message)
        return with_conditions(status.model_copy(update=update), now)
    if job.failed:
        block = blocks.failed_block(obs.blocks or ())
        why = (blocks.describe(block) if block else None) or (obs.failure.describe() if obs.failure else None) \
            or ": ".join(p for p in (job.reason, job.message) if p) or "Job failed"
        message = f"{stage} failed: {why}"
        stages[stage] = st.model_copy(update={"phase": Phase.FAILED, "message": why, "eta_seconds": None,
                                              "finished_at": job.completion_time or st.finished_at or now,
                                              "usage": _usage(st, job, now)})
        # A stage that found the output owned by another Reconstruction (volumes: the operator could not look).
        in_use = obs.failure is not None and obs.failure.reason == OutputInUseError.reason
        reason = Reason.OUTPUT_IN_USE if in_use else Reason.STAGE_FAILED
        update.update(stages=stages, phase=Phase.FAILED, reason=reason, message=message)
        return with_conditions(status.model_copy(update=update), now)

    # In a queue Kueue owns the Job's suspend flag: suspended there means waiting for (re-)admission.
    queued = job.suspended and bool(obs.queue) and not spec.suspend
    suspended = job.suspended and spec.suspend
    phase = Phase.SUSPENDED if suspended else Phase.QUEUED if queued else Phase.RUNNING
    st_update: dict[str, Any] = {"phase": phase}
    if phase == Phase.RUNNING:
        st_update["started_at"] = st.started_at or job.start_time or now
    if obs.progress is not None and phase == Phase.RUNNING:
        st_update.update(progress=blocks.stage_fraction(st, obs.progress.fraction),
                         message=obs.progress.message or st.message,
                         eta_seconds=obs.progress.eta_seconds, progress_updated=obs.progress.updated)
    stages[stage] = st.model_copy(update=st_update)
    if phase == Phase.SUSPENDED:
        reason, message = Reason.SUSPENDED, f"{stage} suspended"
    elif phase == Phase.QUEUED:
        reason, message = Reason.QUEUED, f"{stage}: Job {job.name} waits for Kueue to admit it (queue {obs.queue})"
    else:
        reason, message = Reason.STAGE_RUNNING, stages[stage].message or f"{stage} running"
    update.update(stages=stages, phase=phase, progress=overall_progress(stages), reason=reason, message=message)
    return with_conditions(status.model_copy(update=update), now)


def _succeeded(status: ReconstructionStatus, spec: ReconstructionSpec, st: StageStatus, update: dict[str, Any],
               now: str) -> ReconstructionStatus:
    """The stage done: the next one is current, or, after the last, the run succeeded with its metrics."""
    stage = update["stage"]
    stages = {**status.stages, stage: st}
    update["stages"] = stages
    nxt = STAGES.index(stage) + 1
    if nxt < len(STAGES):
        update.update(phase=Phase.RUNNING, reason=Reason.STAGE_RUNNING, stage=STAGES[nxt],
                      message=f"{stage} done; {STAGES[nxt]} next")
    else:
        update.update(phase=Phase.SUCCEEDED, reason=Reason.COMPLETED, message="all stages done",
                      metrics=aggregate_metrics(stages), outputs=aggregate_outputs(spec, status.run or 0, stages))
    update["progress"] = overall_progress(stages)
    return with_conditions(status.model_copy(update=update), now)


def _stage_succeeded(st: StageStatus, obs: Observation, job: JobView | None, now: str) -> StageStatus:
    result = obs.result
    update: dict[str, Any] = {"phase": Phase.SUCCEEDED, "progress": 1.0, "eta_seconds": None, "message": "done"}
    if result is not None:
        update.update(metrics=dict(result.metrics), outputs=dict(result.outputs),
                      started_at=st.started_at or result.started_at, finished_at=result.finished_at)
        # The stage's wall time, whatever the stage timed inside (its metrics' durations).
        update["metrics"][STAGE_SECONDS] = result.duration_seconds
        update["warnings"] = [w[:500] for w in result.warnings[:20]]
    else:
        update["finished_at"] = (job.completion_time if job else None) or now
    if job is not None:
        update["usage"] = _usage(st, job, now)
    return st.model_copy(update=update)


def _usage(st: StageStatus, job: JobView, now: str) -> Any:
    """The stage's usage with its Job finished: a merge Job's adds to its blocks' Indexed Job's."""
    return add_usage(st.usage, job.usage(now)) if st.blocks else job.usage(now)


def _merging(status: ReconstructionStatus, st: StageStatus, job: JobView | None, update: dict[str, Any],
             now: str) -> ReconstructionStatus:
    """Every block trained: the stage goes on with their merge (its Job created in the same decision)."""
    stage = update["stage"]
    st = st.model_copy(update={
        "phase": Phase.RUNNING, "eta_seconds": None, "usage": job.usage(now) if job is not None else st.usage,
        "started_at": st.started_at or (job.start_time if job is not None else None) or now,
        "message": f"{len(st.blocks)} blocks done; merging them (Job {st.merge_job})"})
    stages = {**status.stages, stage: st}
    update.update(stages=stages, phase=Phase.RUNNING, reason=Reason.STAGE_RUNNING, message=f"{stage}: {st.message}",
                  progress=overall_progress(stages))
    return with_conditions(status.model_copy(update=update), now)


def overall_progress(stages: dict[str, StageStatus]) -> float:
    """Percent of the whole run done, weighting stages by their usual share of the time (layout.py)."""
    fractions = {name: 1.0 if st.phase == Phase.SUCCEEDED else (st.progress or 0.0) for name, st in stages.items()}
    return round(100 * overall_fraction(fractions), 1)


def aggregate_metrics(stages: dict[str, StageStatus]) -> Metrics:
    """The run's metrics from its stages' (the earlier stage wins a shared key, as in `spaceport run`)."""
    merged = merge_metrics(stages[s].metrics for s in STAGES if s in stages)
    values = {field: merged[key] for key, field in METRIC_KEYS.items() if key in merged}
    durations: dict[str, float] = {}
    for stage in STAGES:
        seconds = stages[stage].metrics.get(STAGE_SECONDS) if stage in stages else None
        if isinstance(seconds, int | float):
            durations[stage] = float(seconds)
    if "compression_ratio" not in values and values.get("ply_bytes") and values.get("sog_bytes"):
        values["compression_ratio"] = round(values["ply_bytes"] / values["sog_bytes"], 2)
    return Metrics(**values, durations=durations)


def aggregate_outputs(spec: ReconstructionSpec, run: int, stages: dict[str, StageStatus]) -> dict[str, str]:
    """What the stages said they wrote; the contract's files only for a stage whose result named none."""
    outputs: dict[str, str] = {}
    formats = spec.stage_options(COMPRESS.name).formats  # type: ignore[union-attr]
    for stage in PIPELINE:
        st = stages.get(stage.name)
        if st is None or st.phase != Phase.SUCCEEDED:
            continue
        if st.outputs:
            outputs.update(st.outputs)
            continue
        for out in stage.outputs:
            if out.format is None or out.format in formats:
                outputs[out.name] = join(stage_uri(spec.output.uri, run, stage.name), out.file)
    return outputs


def condition_values(status: ReconstructionStatus) -> dict[str, tuple[str, str, str]]:
    """Each condition type's (status, reason, message) for the phase."""
    reason, message = str(status.reason or Reason.CREATED), status.message or ""
    phase = status.phase
    done, failed = phase == Phase.SUCCEEDED, phase == Phase.FAILED
    working = phase in (Phase.PENDING, Phase.QUEUED, Phase.RUNNING)
    idle = "Suspended" if phase == Phase.SUSPENDED else reason
    return {
        "Ready": ("True" if done else "False", reason, message),
        "Succeeded": ("True" if done else "False", reason, message),
        "Failed": ("True" if failed else "False", reason, message),
        "Reconciling": ("True" if working else "False", reason if working else idle, message),
        "Stalled": ("True" if failed else "False", reason, message),
    }


def with_conditions(status: ReconstructionStatus, now: str) -> ReconstructionStatus:
    """Keep the conditions in step with the phase and generation; a time moves only when its status changes."""
    old = {c.type: c for c in status.conditions}
    conditions = [c for c in status.conditions if c.type not in CONDITION_TYPES]
    for type_, (truth, reason, message) in condition_values(status).items():
        before = old.get(type_)
        changed = before is None or before.status != truth
        conditions.append(Condition(type=type_, status=truth, reason=reason, message=message[:1000],
                                    observed_generation=status.observed_generation,
                                    last_transition_time=now if changed else before.last_transition_time))
    return status.model_copy(update={"conditions": conditions})


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``; ``{}`` when they are equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            sub = merge_patch(old[key], value)
            if isinstance(value, dict) and isinstance(old[key], dict) and sub == {}:
                continue
            patch[key] = sub
    return patch


def transitions(old: ReconstructionStatus, new: ReconstructionStatus) -> list[tuple[str, str, str]]:
    """Kubernetes Events for what changed: (type, reason, message)."""
    events: list[tuple[str, str, str]] = []
    if new.run != old.run:
        started, _, why = (new.message or "").partition(": ")  # why this number: start_run's ``why``
        why = f"; {why}" if why and started == f"run {new.run} started" else ""
        events.append(("Normal", "RunStarted", f"run {new.run} writes to {new.run_uri}{why}"))
    for stage in STAGES:
        before = old.stages.get(stage, StageStatus()).phase if old.run == new.run else Phase.PENDING
        after = new.stages.get(stage, StageStatus()).phase
        if before == after:
            continue
        st = new.stages[stage]
        if after == Phase.RUNNING and before == Phase.SUSPENDED:
            events.append(("Normal", "StageResumed", f"{stage}: Job {st.job} resumed"))
        elif after == Phase.RUNNING and before == Phase.QUEUED:
            events.append(("Normal", "StageAdmitted", f"{stage}: Kueue admitted Job {st.job}"))
        elif after == Phase.QUEUED:
            events.append(("Normal", "StageQueued", f"{stage}: Job {st.job} waits for Kueue"))
        elif after == Phase.RUNNING:
            events.append(("Normal", "StageStarted", f"{stage}: Job {st.job} started"))
        elif after == Phase.SUSPENDED:
            events.append(("Normal", "StageSuspended", f"{stage}: Job {st.job} suspended"))
        elif after == Phase.SUCCEEDED:
            events.append(("Normal", "StageSucceeded", f"{stage} finished"))
        elif after == Phase.FAILED:
            events.append(("Warning", "StageFailed", new.message or f"{stage} failed"))
    for stage, st in new.stages.items():
        if st.blocks and old.run == new.run and not old.stages.get(stage, StageStatus()).blocks:
            events.append(("Normal", "Partitioned", f"{stage}: {len(st.blocks)} blocks, one index each of Job "
                                                    f"{st.job}, then merged by Job {st.merge_job}"))
    if new.reason == Reason.RETRYING and old.reason != Reason.RETRYING:
        events.append(("Normal", "Retrying", new.message or "retrying"))
    if new.phase != old.phase and new.phase == Phase.SUCCEEDED:
        events.append(("Normal", "Succeeded", "all stages finished"))
    if new.phase == Phase.FAILED and new.reason == Reason.INVALID_SPEC and old.reason != Reason.INVALID_SPEC:
        events.append(("Warning", "InvalidSpec", new.message or "invalid spec"))
    if new.reason in (Reason.BAD_CREDENTIALS, Reason.WAITING_FOR_SECRET, Reason.OUTPUT_IN_USE) \
            and new.reason != old.reason:
        events.append(("Warning", str(new.reason), new.message or str(new.reason)))
    return events

"""Decide: (status, spec, what was observed) -> the next status and the actions that get there. Pure: no API calls.

A pass (``reconcile.py``) observes (``observe.py``), decides here, and acts (``act.py``: the one place that
creates or deletes Jobs, patches them, claims the output, writes status and queues notifications). Each function
here returns a :class:`Decision`; tests/operator/test_decide.py covers them row by row (phase x observation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from spaceport.api import Phase, Reason, ReconstructionSpec, ReconstructionStatus, StageStatus
from spaceport.contract import StaleOutputError, owner_conflict
from spaceport.controller import blocks, notify, usage
from spaceport.controller import status as st
from spaceport.controller.jobs import WHOLE, Part
from spaceport.controller.observe import HOLDABLE, Observation, creates_job
from spaceport.controller.progress import OutputView
from spaceport.layout import spec_run_key
from spaceport.storage import credentials_problem


@dataclass(frozen=True)
class CreateJob:
    """Create the stage's Job (adopting one of ours that exists under its name); ``part``: which of a partitioned
    stage's Jobs (its blocks' Indexed Job or their merge)."""

    stage: str
    attempt: int = 1
    part: Part = WHOLE


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class DeleteJobs:
    """Delete the Reconstruction's Jobs, but those of run ``keep_run`` (None: all of them)."""

    keep_run: int | None = None


@dataclass(frozen=True)
class PatchSuspend:
    job: str
    suspend: bool


@dataclass(frozen=True)
class ClaimOutput:
    """Write the output prefix's owner record (the prefix held none)."""


@dataclass(frozen=True)
class Notify:
    """Queue spec.notify's POST for the run (it is sent, and recorded in status, from a background thread)."""

    run: int


Action = CreateJob | DeleteJob | DeleteJobs | PatchSuspend | ClaimOutput | Notify


@dataclass(frozen=True)
class Decision:
    status: ReconstructionStatus
    actions: tuple[Action, ...] = ()
    write: Literal["first", "last"] | None = None
    """Write the status now, before (``first``) or after (``last``) the actions, not only at the end of the pass:
    a new run or a retry names Jobs before they exist, so that a restart finds the same names; a run stopped
    by its spec or its output deletes its Jobs, then says so."""
    final: bool = False
    """Nothing more to do in this pass."""


@dataclass(frozen=True)
class Prices:
    cpu_hour: float | None = None
    gpu_hour: float | None = None
    currency: str | None = None


def notifications(spec: ReconstructionSpec, status: ReconstructionStatus) -> tuple[Action, ...]:
    return (Notify(status.run),) if notify.due(spec, status) and status.run is not None else ()


def invalid(old: ReconstructionStatus, message: str, generation: int | None, now: str) -> Decision:
    """The spec does not validate: the run stops (its Jobs go) until the spec changes."""
    if old.phase == Phase.FAILED and old.observed_generation == generation:
        return Decision(old, final=True)
    return Decision(st.invalid_spec(old, message, generation, now), (DeleteJobs(None),), write="last", final=True)


def settled(old: ReconstructionStatus, spec: ReconstructionSpec, retry: str | None,
            generation: int | None) -> Decision | None:
    """Nothing to do for a finished run of this spec and generation, unless a retry was asked for."""
    asked = retry is not None and retry != old.retry
    if old.run is not None and old.run_key == spec_run_key(spec) and st.is_settled(old, generation) and not asked:
        return Decision(old, notifications(spec, old), final=True)
    return None


def retry(old: ReconstructionStatus, spec: ReconstructionSpec, name: str, value: str | None,
          generation: int | None, now: str) -> Decision | None:
    """A new value of the retry annotation: the failed stage's new attempt, named before its Job exists. (A spec
    that changed since starts a new run instead: the value is only noted.)"""
    if value is None or value == old.retry:
        return None
    if old.run_key == spec_run_key(spec):
        return Decision(st.retry_run(old, name, value, generation, now), write="first")
    return Decision(old.model_copy(update={"retry": value}), write="first")


def needs_run(status: ReconstructionStatus, spec: ReconstructionSpec) -> bool:
    """No run yet, a spec that changes results, or a run stopped by its spec or output: start the next run."""
    return status.run is None or status.run_key != spec_run_key(spec) \
        or status.reason in (Reason.INVALID_SPEC, Reason.OUTPUT_IN_USE)


def start(status: ReconstructionStatus, spec: ReconstructionSpec, namespace: str, name: str,
          generation: int | None, now: str, output: OutputView | None) -> Decision:
    """The next run, numbered past what status and the output (``output``: None where unreadable) hold, with its
    Job names; or OutputInUse when the output's owner record names another Reconstruction."""
    conflict = None
    if output is not None and output.owner is not None:
        conflict = owner_conflict(output.owner, output.uri, namespace, name)
    if conflict is not None:
        return output_in_use(status, conflict, generation, now)
    stored = max(output.runs) if output is not None and output.runs else 0
    claim: tuple[Action, ...] = (ClaimOutput(),) if output is not None and output.owner is None else ()
    return Decision(st.start_run(status, spec, name, generation, now, stored), claim, write="last")


def moved(status: ReconstructionStatus, spec: ReconstructionSpec, obs: Observation, name: str,
          generation: int | None, now: str) -> Decision | None:
    """A stage's Job found its run folder holding files made from other inputs (StaleOutput: a re-created
    Reconstruction on a volume, whose runs the operator cannot list) and named the next free run number: the run
    starts again there, from the first stage, named in status before its Job exists. The old folder is kept as
    it is. None for anything else (a StaleOutput without a number, or one not past this run, fails the run)."""
    job, failure = obs.job, obs.failure
    if job is None or not job.failed or failure is None or failure.reason != StaleOutputError.reason \
            or failure.next_run is None or failure.next_run <= (status.run or 0):
        return None
    why = f"{status.run_uri} holds {obs.stage} files made from other inputs, kept as they are"
    return Decision(st.start_run(status, spec, name, generation, now, failure.next_run - 1, why), write="first")


def output_in_use(status: ReconstructionStatus, why: str, generation: int | None, now: str) -> Decision:
    """The output belongs to another Reconstruction: no run here until the spec names another output."""
    new = st.invalid_spec(status, why, generation, now, Reason.OUTPUT_IN_USE)
    return Decision(new, (DeleteJobs(None),), write="last", final=True)


def stage(status: ReconstructionStatus, spec: ReconstructionSpec, obs: Observation, recon: str,
          generation: int | None, now: str) -> Decision:
    """The current stage's next step: hold it (suspended in a queue), create its Job, mirror its Job's state.
    ``recon``: the Reconstruction's name, for the names of Jobs decided here (partitioned training's merge)."""
    name = obs.stage
    sst = status.stages.get(name, StageStatus())
    job = obs.job
    if obs.queue and spec.suspend and sst.phase in HOLDABLE and (job is None or not job.finished):
        # Kueue owns a queued Job's suspend flag (it would undo ours): a suspended run holds no Job at all.
        gone: tuple[Action, ...] = (DeleteJob(job.name),) if job is not None else ()
        return Decision(st.next_status(status, spec, replace(obs, job=None), generation, now, held=True), gone)
    if job is None and creates_job(status, name, obs.queue):
        problem = _credentials(obs)
        if problem is not None:
            return Decision(st.next_status(status, spec, obs, generation, now, problem=problem))
        # Earlier runs' Jobs go before this run's first (or next) Job: also after a restart that cut the previous
        # pass short between saving the new run and deleting the old one.
        run = status.run or 0
        cleanup: tuple[Action, ...] = (DeleteJobs(keep_run=run),) if run > 1 else ()
        # Partitioned training: its blocks (and merge Job) are named in status before the Indexed Job exists.
        planned = blocks.plan(status, spec, name, recon)
        status = planned or status
        return Decision(status, (*cleanup, _create(status, name)), write="first" if planned else None)
    actions: tuple[Action, ...] = ()
    if job is not None and not obs.queue and not job.finished and job.suspended != spec.suspend:
        actions = (PatchSuspend(job.name, spec.suspend),)
        obs = replace(obs, job=replace(job, suspended=spec.suspend))
    new = st.next_status(status, spec, obs, generation, now)
    if blocks.merging(new.stages.get(name, StageStatus())) and not blocks.merging(sst) \
            and new.phase != Phase.FAILED:
        # The blocks are done: their merge Job is created before status says so (a restart adopts it).
        actions = (*actions, _create(new, name))
    return Decision(new, actions)


def _create(status: ReconstructionStatus, stage: str) -> CreateJob:
    """The stage's Job to create now: the whole stage, its blocks' Indexed Job, or (every block done) their merge."""
    sst = status.stages.get(stage, StageStatus())
    part = Part(len(sst.blocks), blocks.merging(sst)) if sst.blocks else WHOLE
    return CreateJob(stage, sst.attempt or 1, part)


def finish(status: ReconstructionStatus, spec: ReconstructionSpec, prices: Prices, now: str) -> Decision:
    """The pass's last word: usage so far, conditions (also for a generation that changed nothing else) and the
    run's notification when it just ended."""
    total = usage.total(status.stages, prices.cpu_hour, prices.gpu_hour, prices.currency)
    status = st.with_conditions(status.model_copy(update={"usage": total}), now)
    return Decision(status, notifications(spec, status), write="first", final=True)


def _credentials(obs: Observation) -> tuple[Reason, str] | None:
    """A named storage Secret that is missing (the Pod would wait) or holds no usable keys (it would fail)."""
    secret = obs.secret
    if secret is None:
        return None
    if secret.keys is None:
        return Reason.WAITING_FOR_SECRET, (f"{secret.field}: waiting for Secret {secret.name!r} in namespace "
                                           f"{secret.namespace}")
    problem = credentials_problem(secret.keys)
    if problem is None:
        return None
    return Reason.BAD_CREDENTIALS, (f"{secret.field}: Secret {secret.name!r} {problem}; stages would find no S3 "
                                    "credentials")

"""Partitioned training, pure parts: the Indexed Job and merge Job builders, the decision table of the train stage
split into blocks, per-block status from an Indexed Job's indexes and Pods, and a retry. No cluster needed."""

from __future__ import annotations

from typing import Any

import pytest

from spaceport.api import FailureRecord, Phase, Reason, ReconstructionSpec, ReconstructionStatus
from spaceport.api.reconstruction import BlockStatus, StageStatus, Usage
from spaceport.contract import ProgressRecord, StageResult
from spaceport.controller import blocks, decide
from spaceport.controller.blocks import BlockView, IndexPods, index_pods, parse_indexes
from spaceport.controller.decide import CreateJob, DeleteJob, PatchSuspend
from spaceport.controller.jobs import WHOLE, Owner, Part, build_job
from spaceport.controller.naming import MERGE, job_name
from spaceport.controller.observe import JobView, Observation, SecretView
from spaceport.controller.settings import OperatorSettings
from spaceport.controller.status import retry_run, start_run

NOW = "2026-01-01T00:00:00Z"
OWNER = Owner(name="site", namespace="surveys", uid="u-1")
SETTINGS = OperatorSettings(stage_image="stage:1", job_ttl_seconds=3600)
KEYS = SecretView("default", "creds", "spec.input.credentialsSecret", frozenset({"AWS_ACCESS_KEY_ID",
                                                                                  "AWS_SECRET_ACCESS_KEY"}))


def spec(**extra: Any) -> ReconstructionSpec:
    return ReconstructionSpec.model_validate({
        "input": {"uri": "s3://photos/site", "credentialsSecret": "creds"},
        "output": {"uri": "s3://results/site"}, **extra})


def args(job: dict[str, Any]) -> list[str]:
    return job["spec"]["template"]["spec"]["containers"][0]["args"]


# The Jobs

def test_the_blocks_run_as_one_indexed_job_each_block_retried_alone() -> None:
    job = build_job(OWNER, spec(retries=3, train={"scheduling": {"parallelism": 2}}), 1, "train", SETTINGS,
                    part=Part(4))
    body = job["spec"]
    assert job["metadata"]["name"] == "site-r1-train"
    assert (body["completionMode"], body["completions"], body["parallelism"]) == ("Indexed", 4, 2)
    # backoffLimit left out: with backoffLimitPerIndex it defaults to 2147483647; a small one would end the Job.
    assert body["backoffLimitPerIndex"] == 3 and "backoffLimit" not in body
    assert body["podFailurePolicy"]["rules"] == [
        {"action": "FailIndex", "onExitCodes": {"containerName": "stage", "operator": "In", "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    assert args(job)[-2:] == ["--blocks", "4"] and args(job)[:2] == ["--input", "s3://results/site/runs/1/sfm"]
    pod = body["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1  # one GPU per index
    assert pod["restartPolicy"] == "Never"  # backoffLimitPerIndex requires it
    # Default parallelism: every block at once; never more than the blocks.
    assert build_job(OWNER, spec(), 1, "train", SETTINGS, part=Part(3))["spec"]["parallelism"] == 3
    wide = spec(train={"scheduling": {"parallelism": 9}})
    assert build_job(OWNER, wide, 1, "train", SETTINGS, part=Part(3))["spec"]["parallelism"] == 3


def test_the_merge_job_is_a_plain_job_on_the_train_pool() -> None:
    job = build_job(OWNER, spec(queueName="gpu", retries=1), 1, "train", SETTINGS, attempt=2, part=Part(4, merge=True))
    body = job["spec"]
    assert job["metadata"]["name"] == "site-r1-train-merge-a2" == job_name("site", 1, "train", 2, MERGE)
    assert "completionMode" not in body and "backoffLimitPerIndex" not in body and body["backoffLimit"] == 1
    assert body["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    assert args(job)[-3:] == ["--blocks", "4", "--merge"]
    assert args(job)[3] == "s3://results/site/runs/1/train"  # the same train folder the blocks wrote under
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu" and body["suspend"] is True
    whole = build_job(OWNER, spec(), 1, "train", SETTINGS)
    assert build_job(OWNER, spec(), 1, "train", SETTINGS, part=Part(1)) == whole  # one block: today's Job
    assert "--blocks" not in args(whole) and "completionMode" not in whole["spec"]


# Reading an Indexed Job

def pod(index: int, phase: str, exit_code: int | None = None, message: str = "", at: str = "t1") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [{"name": "stage", "state": {"terminated": {
            "exitCode": exit_code, "reason": "Error", "message": message, "finishedAt": at}}}]
    return {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": str(index)}}, "status": status}


def test_completed_and_failed_indexes_and_each_index_s_pods() -> None:
    assert parse_indexes("1,3-5,7") == {1, 3, 4, 5, 7} and parse_indexes(None) == frozenset()
    assert parse_indexes("0-2, 9") == {0, 1, 2, 9}
    view = JobView.of({"metadata": {"name": "j"}, "spec": {"parallelism": 2},
                       "status": {"completedIndexes": "0,2", "failedIndexes": "1"}})
    assert view.completed_indexes == {0, 2} and view.failed_indexes == {1}
    record = '{"stage":"train","reason":"Retryable","message":"CUDA out of memory"}'
    pods = index_pods([pod(0, "Succeeded", 0), pod(1, "Failed", 1, record, "t1"), pod(1, "Failed", 137, "", "t2"),
                       pod(2, "Running"), {"metadata": {}, "status": {"phase": "Running"}}])
    assert set(pods) == {1, 2} and pods[2] == IndexPods(live=True)
    assert pods[1].failures == 2 and not pods[1].live
    assert pods[1].failure is not None and pods[1].failure.describe() == "exit code 137 (Error)"  # the latest
    assert index_pods([pod(3, "Failed", 1, record)])[3].failure.describe() == "Retryable: CUDA out of memory"
    evicted = pod(4, "Failed", 1, record)
    evicted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True"}]
    assert 4 not in index_pods([evicted])  # ignored by the podFailurePolicy: not one of spec.retries' failures


def test_block_status_and_the_stage_s_progress_come_from_the_blocks() -> None:
    sst = StageStatus(job="site-r1-train", blocks=[BlockStatus(index=i) for i in range(4)])
    failure = FailureRecord(stage="train", reason="Retryable", message="killed")
    views = (BlockView(0, completed=True),
             BlockView(1, pods=IndexPods(live=True, failures=1, failure=failure),
                       progress=ProgressRecord(fraction=0.5, message="step 500", updated="t", eta_seconds=60)),
             BlockView(2, pods=IndexPods(failures=1, failure=failure)),
             BlockView(3))
    folded = blocks.fold(sst, views)
    phases = [(b.phase, b.progress, b.failures) for b in folded.blocks]
    assert phases == [(Phase.SUCCEEDED, 1.0, 0), (Phase.RUNNING, 0.5, 1), (Phase.PENDING, None, 1),
                      (Phase.PENDING, None, 0)]
    assert folded.blocks[1].message == "step 500" and folded.blocks[1].eta_seconds == 60
    assert folded.blocks[2].message == "retrying after 1 failure(s): Retryable: killed"
    assert folded.progress == pytest.approx(0.9 * 1.5 / 4)
    assert folded.eta_seconds is None  # blocks still waiting: the end is not known from the running ones
    assert folded.message == "blocks: 1/4 done, 1 training, 2 waiting, 2 Pod failure(s) retried"
    assert not blocks.merging(folded) and blocks.step_job(folded) == "site-r1-train"
    done = blocks.fold(folded.model_copy(update={"merge_job": "m"}), tuple(BlockView(i, completed=True)
                                                                          for i in range(4)))
    assert blocks.merging(done) and blocks.step_job(done) == "m" and done.progress == 0.9


# The decision table of a partitioned train stage

def after_sfm(registered: int, **extra: Any) -> ReconstructionStatus:
    """Run 1 of ``spec(**extra)`` with sfm done (``registered`` photos registered) and train next."""
    status = start_run(ReconstructionStatus(), spec(**extra), "site", 1, NOW)
    sfm = status.stages["sfm"].model_copy(update={"phase": Phase.SUCCEEDED, "progress": 1.0,
                                                 "metrics": {"registeredImages": registered}})
    return status.model_copy(update={"stages": {**status.stages, "sfm": sfm}, "stage": "train",
                                     "phase": Phase.RUNNING})


def planned(registered: int = 3500, **extra: Any) -> ReconstructionStatus:
    """The train stage's blocks planned and its Indexed Job created (seen Running)."""
    decision = decide.stage(after_sfm(registered, **extra), spec(**extra), Observation("train", None, secret=KEYS),
                            "site", 1, NOW)
    train = decision.status.stages["train"].model_copy(update={"phase": Phase.RUNNING})
    return decision.status.model_copy(update={"stages": {**decision.status.stages, "train": train}})


def indexed(active: int = 2, completed: str = "", failed: str = "", done: bool = False,
            failed_job: bool = False, name: str = "site-r1-train", suspended: bool = False) -> JobView:
    conditions = [{"type": "Complete", "status": "True"}] if done else []
    if failed_job:
        conditions = [{"type": "Failed", "status": "True", "reason": "FailedIndexes",
                       "message": "Job has failed indexes"}]
    return JobView.of({"metadata": {"name": name}, "spec": {"parallelism": 4, "suspend": suspended},
                       "status": {"active": active, "completedIndexes": completed, "failedIndexes": failed,
                                  "startTime": "2026-01-01T00:00:00Z", "conditions": conditions}})


def merge_job(**status: Any) -> JobView:
    return JobView.of({"metadata": {"name": "site-r1-train-merge"}, "status": status})


OOM = FailureRecord(stage="train", reason="Retryable", message="CUDA out of memory")
LIVE = IndexPods(live=True)
MERGED = StageResult(stage="train", started_at="t1", finished_at="t2", duration_seconds=60.0,
                     metrics={"gaussians": 4_000_000, "blocks": 4})


@pytest.mark.parametrize(("registered", "extra", "part", "write"), [
    (3500, {}, Part(4), "first"),  # 3500 photos, 1000 a block: 4 blocks, named in status before the Job exists
    (900, {}, WHOLE, None),  # one block: exactly today's Job, no extra status write
    (10, {"train": {"blocks": 3}}, Part(3), "first"),  # an explicit count, whatever the model's size
    (50_000, {"train": {"blocks": 1}}, WHOLE, None),  # never partitioned
    (5000, {"train": {"blockMaxImages": 2500}}, Part(2), "first"),
])
def test_the_train_job_is_planned_from_the_sfm_model(registered: int, extra: dict[str, Any], part: Part,
                                                      write: str | None) -> None:
    decision = decide.stage(after_sfm(registered, **extra), spec(**extra), Observation("train", None, secret=KEYS),
                            "site", 1, NOW)
    assert decision.actions == (CreateJob("train", 1, part),) and decision.write == write
    train = decision.status.stages["train"]
    assert [b.index for b in train.blocks] == list(range(part.blocks if part.blocks > 1 else 0))
    assert train.merge_job == ("site-r1-train-merge" if part.blocks > 1 else None)
    assert train.job == "site-r1-train"


ROWS = [
    # id, observation of the blocks' Indexed Job (or the merge Job), (stage phase, run reason), actions
    ("blocks training: per-block status, no action",
     Observation("train", indexed(completed="0"), blocks=(BlockView(0, True), BlockView(1, pods=LIVE),
                                                          BlockView(2, pods=LIVE), BlockView(3))),
     (Phase.RUNNING, Reason.STAGE_RUNNING), ()),
    ("one block's Pod failed, retried by Kubernetes: still running",
     Observation("train", indexed(), blocks=(BlockView(0, pods=IndexPods(live=True, failures=1, failure=OOM)),
                                             BlockView(1, pods=LIVE), BlockView(2), BlockView(3))),
     (Phase.RUNNING, Reason.STAGE_RUNNING), ()),
    ("Indexed Job complete: the merge Job is created at once",
     Observation("train", indexed(0, completed="0-3", done=True), blocks=tuple(BlockView(i) for i in range(4))),
     (Phase.RUNNING, Reason.STAGE_RUNNING), (CreateJob("train", 1, Part(4, merge=True)),)),
    ("Indexed Job vanished, every block's result stored: merge",
     Observation("train", None, blocks=tuple(BlockView(i, completed=True) for i in range(4))),
     (Phase.RUNNING, Reason.STAGE_RUNNING), (CreateJob("train", 1, Part(4, merge=True)),)),
    ("Indexed Job vanished with blocks unfinished",
     Observation("train", None, blocks=(BlockView(0, completed=True), BlockView(1), BlockView(2), BlockView(3))),
     (Phase.FAILED, Reason.JOB_VANISHED), ()),
    ("a block failed for good: the Job failed, the stage names it",
     Observation("train", indexed(0, completed="0,1,3", failed="2", failed_job=True), failure=OOM,
                 blocks=(BlockView(0, True), BlockView(1, True), BlockView(2, failed=True, pods=IndexPods(
                     failures=3, failure=OOM)), BlockView(3, True))),
     (Phase.FAILED, Reason.STAGE_FAILED), ()),
    ("Indexed Job suspended, the spec not: resumed", Observation("train", indexed(0, suspended=True),
                                                                 blocks=tuple(BlockView(i) for i in range(4))),
     (Phase.RUNNING, Reason.STAGE_RUNNING), (PatchSuspend("site-r1-train", False),)),
]


@pytest.mark.parametrize(("obs", "expected", "actions"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_partitioned_stage_decisions(obs: Observation, expected: tuple[Phase, Reason],
                                     actions: tuple[decide.Action, ...]) -> None:
    status = planned()
    decision = decide.stage(status, spec(), obs, "site", 1, NOW)
    train = decision.status.stages["train"]
    assert (train.phase, decision.status.reason) == expected
    assert decision.actions == actions
    assert len(train.blocks) == 4 and decision.status.stage == "train"


def test_the_stage_message_names_the_failed_block_and_its_failure_record() -> None:
    obs = ROWS[5][1]
    new = decide.stage(planned(), spec(), obs, "site", 1, NOW).status
    assert new.message == "train failed: block 2: Retryable: CUDA out of memory"
    assert [b.phase for b in new.stages["train"].blocks] == [Phase.SUCCEEDED, Phase.SUCCEEDED, Phase.FAILED,
                                                             Phase.SUCCEEDED]
    assert new.stages["train"].blocks[2].failures == 3


def test_progress_runs_through_the_blocks_then_the_merge() -> None:
    status = planned()
    views = (BlockView(0, True), BlockView(1, pods=LIVE, progress=ProgressRecord(fraction=0.5, updated="t")),
             BlockView(2), BlockView(3))
    running = decide.stage(status, spec(), Observation("train", indexed(completed="0"), blocks=views), "site", 1,
                           NOW).status
    assert running.stages["train"].progress == pytest.approx(0.9 * 1.5 / 4, abs=1e-4)
    assert running.progress == pytest.approx(20 + 60 * 0.9 * 1.5 / 4, abs=0.1)
    assert running.message == "blocks: 1/4 done, 1 training, 2 waiting"
    merging = decide.stage(running, spec(), Observation("train", indexed(0, completed="0-3", done=True),
                                                        blocks=views), "site", 1, NOW).status
    assert merging.progress == 74.0 and merging.message == "train: 4 blocks done; merging them (Job " \
                                                           "site-r1-train-merge)"
    assert merging.stages["train"].usage is not None  # the Indexed Job's share, kept for the merge to add to
    half = decide.stage(merging, spec(), Observation("train", merge_job(active=1, startTime="2026-01-01T00:00:00Z"),
                                                     progress=ProgressRecord(fraction=0.5, updated="t")),
                        "site", 1, NOW)
    assert half.actions == () and half.status.stages["train"].progress == pytest.approx(0.95)
    done = decide.stage(half.status, spec(), Observation("train", merge_job(
        startTime="2026-01-01T00:00:00Z", completionTime="2026-01-01T00:10:00Z",
        conditions=[{"type": "Complete", "status": "True"}]), result=MERGED), "site", 1, NOW).status
    train = done.stages["train"]
    assert (train.phase, done.stage, train.metrics["gaussians"], train.metrics["blocks"]) == (
        Phase.SUCCEEDED, "compress", 4_000_000, 4)
    assert train.usage is not None and train.usage.wall_seconds > merging.stages["train"].usage.wall_seconds


def test_a_queued_run_suspended_while_merging_gets_its_merge_job_back() -> None:
    merging = planned(queueName="gpu")
    train = merging.stages["train"].model_copy(update={
        "phase": Phase.RUNNING, "blocks": [b.model_copy(update={"phase": Phase.SUCCEEDED})
                                           for b in merging.stages["train"].blocks]})
    status = merging.model_copy(update={"stages": {**merging.stages, "train": train}})
    held = decide.stage(status, spec(queueName="gpu", suspend=True), Observation("train", merge_job(active=1),
                                                                                 queue="gpu"), "site", 1, NOW)
    assert held.actions == (DeleteJob("site-r1-train-merge"),)
    back = decide.stage(held.status, spec(queueName="gpu"), Observation("train", None, queue="gpu", secret=KEYS),
                        "site", 1, NOW)
    assert back.actions == (CreateJob("train", 1, Part(4, merge=True)),)


def test_a_retry_keeps_the_blocks_that_succeeded() -> None:
    failed_block = decide.stage(planned(), spec(), ROWS[5][1], "site", 1, NOW).status
    again = retry_run(failed_block, "site", "1", 1, NOW)
    train = again.stages["train"]
    assert (train.job, train.merge_job, train.attempt) == ("site-r1-train-a2", "site-r1-train-merge-a2", 2)
    assert [b.phase for b in train.blocks] == [Phase.SUCCEEDED, Phase.SUCCEEDED, Phase.PENDING, Phase.SUCCEEDED]
    create = decide.stage(again, spec(), Observation("train", None, secret=KEYS), "site", 1, NOW)
    assert create.actions == (CreateJob("train", 2, Part(4)),) and create.write is None  # K was kept

    # A failed merge: a new merge Job alone, the blocks' Indexed Job is not run again.
    merged = failed_block.stages["train"].model_copy(update={
        "phase": Phase.FAILED, "usage": Usage(wall_seconds=10),
        "blocks": [b.model_copy(update={"phase": Phase.SUCCEEDED}) for b in failed_block.stages["train"].blocks]})
    merge_failed = failed_block.model_copy(update={"stages": {**failed_block.stages, "train": merged}})
    again = retry_run(merge_failed, "site", "2", 1, NOW)
    train = again.stages["train"]
    assert (train.job, train.merge_job) == ("site-r1-train", "site-r1-train-merge-a2")
    assert train.usage == Usage(wall_seconds=10)
    create = decide.stage(again, spec(), Observation("train", None, secret=KEYS), "site", 1, NOW)
    assert create.actions == (CreateJob("train", 2, Part(4, merge=True)),)

"""Partitioned training through the operator against the emulator: the Indexed Job built from the SfM model's size,
per-block status as blocks write progress.json, one block's Pod killed and its index retried alone, then the merge
Job and compress. The test plays the Job controller and kubelet (Pods with the completion-index label, the Job's
completedIndexes) and the stages (progress.json and result.json on S3)."""

from __future__ import annotations

from typing import Any

from tests.operator.harness import Cluster
from tests.operator.test_lifecycle import result, spec_for
from tests.operator.test_retry import annotate

KILLED = '{"stage":"train","reason":"Retryable","message":"terminated by signal 9"}'


def blocks(status: dict[str, Any]) -> list[dict[str, Any]]:
    return ((status.get("stages") or {}).get("train") or {}).get("blocks") or []


def block(status: dict[str, Any], index: int) -> dict[str, Any]:
    found = blocks(status)
    return found[index] if len(found) > index else {}


async def sfm_done(cluster: Cluster, run: str, registered: int) -> None:
    await cluster.wait_job("site-r1-sfm")
    await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", result("sfm", {"imagesUsed": registered,
                                                                          "registeredImages": registered}))


async def test_blocks_train_as_an_indexed_job_a_killed_block_is_retried_alone_then_merged(
        cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets, train={"scheduling": {"parallelism": 2}}))
    run = f"s3://{buckets[1]}/site/runs/1"
    await sfm_done(cluster, run, 3500)  # 3500 registered photos, 1000 a block: 4 blocks

    job = await cluster.wait_job("site-r1-train")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 2)
    assert spec["backoffLimitPerIndex"] == 2 and "backoffLimit" not in spec  # spec.retries, per block
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "FailIndex"
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--blocks", "4"] and container["resources"]["limits"]["nvidia.com/gpu"] == 1
    status = await cluster.wait_status("site", lambda s: len(blocks(s)) == 4, "4 blocks in status")
    assert status["stages"]["train"]["mergeJob"] == "site-r1-train-merge"
    events = await cluster.wait_events("site", {"Partitioned"})
    assert [e["message"] for e in events if e["reason"] == "Partitioned"] == [
        "train: 4 blocks, one index each of Job site-r1-train, then merged by Job site-r1-train-merge"]

    # Blocks 0 and 1 train (parallelism 2) and report progress.
    await cluster.patch_job_status("site-r1-train", {"active": 2, "startTime": "2026-11-25T15:00:00Z"})
    for index in (0, 1):
        await cluster.run_index_pod("site-r1-train", index, None)
    cluster.write_progress(f"{run}/train/blocks/0", 0.5, "block 0: step 3500", 600.0)
    cluster.write_progress(f"{run}/train/blocks/1", 0.25, "block 1: step 1750", 900.0)
    status = await cluster.wait_status("site", lambda s: block(s, 1).get("progress") == 0.25, "block progress")
    assert [b["phase"] for b in blocks(status)] == ["Running", "Running", "Pending", "Pending"]
    assert block(status, 0)["message"] == "block 0: step 3500" and block(status, 0)["etaSeconds"] == 600.0
    train = status["stages"]["train"]
    assert train["progress"] == 0.1688 and status["progress"] == 30.1  # 0.9 * 0.75 / 4 of train's 60 %
    assert status["message"] == "blocks: 0/4 done, 2 training, 2 waiting" and status["phase"] == "Running"

    # Block 1's Pod is killed (exit 1): Kubernetes retries that index alone; status shows it waiting, then back.
    await cluster.end_index_pod("site-r1-train", 1, 1, KILLED)
    status = await cluster.wait_status("site", lambda s: block(s, 1).get("failures") == 1, "block 1 failure")
    assert block(status, 1)["phase"] == "Pending"
    assert block(status, 1)["message"] == "retrying after 1 failure(s): Retryable: terminated by signal 9"
    assert "1 Pod failure(s) retried" in status["message"] and block(status, 0)["phase"] == "Running"
    await cluster.run_index_pod("site-r1-train", 1, None, attempt=1)
    status = await cluster.wait_status("site", lambda s: block(s, 1).get("phase") == "Running", "block 1 again")
    assert block(status, 1)["failures"] == 1

    # Blocks finish (their result.json is the stage's business); 2 and 3 run in their turn.
    await cluster.end_index_pod("site-r1-train", 0, 0, "{}")
    await cluster.end_index_pod("site-r1-train", 1, 0, "{}", attempt=1)
    await cluster.patch_job_status("site-r1-train", {"completedIndexes": "0-1", "succeeded": 2})
    status = await cluster.wait_status("site", lambda s: block(s, 1).get("phase") == "Succeeded", "blocks 0-1")
    assert status["stages"]["train"]["phase"] == "Running" and "merge" not in str(await cluster.jobs())
    for index in (2, 3):
        await cluster.run_index_pod("site-r1-train", index, 0, "{}")
    await cluster.patch_job_status("site-r1-train", {
        "active": 0, "completedIndexes": "0-3", "succeeded": 4, "completionTime": "2026-11-25T15:08:00Z",
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]})

    # Every block done: the merge Job, a plain Job on the train pool, merges them into the train folder.
    merge = await cluster.wait_job("site-r1-train-merge")
    assert "completionMode" not in merge["spec"] and merge["spec"]["backoffLimit"] == 2
    assert merge["spec"]["template"]["spec"]["containers"][0]["args"][-3:] == ["--blocks", "4", "--merge"]
    status = await cluster.wait_status("site", lambda s: "merging" in (s.get("message") or ""), "merging")
    assert [b["phase"] for b in blocks(status)] == ["Succeeded"] * 4 and status["progress"] == 74.0
    await cluster.start_job("site-r1-train-merge")
    cluster.write_progress(f"{run}/train", 0.5, "merging blocks", 30.0)
    status = await cluster.wait_status("site", lambda s: s["stages"]["train"].get("progress") == 0.95, "merge")
    assert status["progress"] == 77.0
    await cluster.succeed_job("site-r1-train-merge", f"{run}/train", result(
        "train", {"gaussians": 3_200_000, "psnr": 26.1, "blocks": 4}))

    await cluster.wait_job("site-r1-compress")
    await cluster.succeed_job("site-r1-compress", f"{run}/compress", result("compress", {"sogBytes": 9}))
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Succeeded", "Succeeded")
    assert status["metrics"]["gaussians"] == 3_200_000 and status["stages"]["train"]["metrics"]["blocks"] == 4
    assert status["stages"]["train"]["usage"]["gpuSeconds"] > 0  # the blocks' Indexed Job and the merge
    names = sorted(j["metadata"]["name"] for j in await cluster.jobs())
    assert names == ["site-r1-compress", "site-r1-sfm", "site-r1-train", "site-r1-train-merge"]
    assert cluster.pruned() == []  # the CRD declares every status field the operator wrote


async def test_a_block_that_failed_for_good_fails_the_run_and_a_retry_recreates_the_indexed_job(
        cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets, train={"blocks": 3}))
    run = f"s3://{buckets[1]}/site/runs/1"
    await sfm_done(cluster, run, 40)
    await cluster.wait_job("site-r1-train")
    for index in (0, 2):
        await cluster.run_index_pod("site-r1-train", index, 0, "{}")
    oom = '{"stage":"train","reason":"Retryable","message":"CUDA out of memory"}'
    for attempt in range(3):
        await cluster.run_index_pod("site-r1-train", 1, 1, oom, attempt=attempt)
    await cluster.patch_job_status("site-r1-train", {
        "active": 0, "completedIndexes": "0,2", "failedIndexes": "1", "succeeded": 2, "failed": 3,
        "startTime": "2026-11-25T15:00:00Z",
        "conditions": [{"type": "FailureTarget", "status": "True", "reason": "FailedIndexes", "message": "x"},
                       {"type": "Failed", "status": "True", "reason": "FailedIndexes",
                        "message": "Job has failed indexes"}]})
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Failed", "Failed")
    assert status["message"] == "train failed: block 1: Retryable: CUDA out of memory"
    assert [(b["phase"], b["failures"]) for b in blocks(status)] == [("Succeeded", 0), ("Failed", 3),
                                                                     ("Succeeded", 0)]

    await annotate(cluster, "site", "1")
    job = await cluster.wait_job("site-r1-train-a2")  # all 3 indexes again: the stage skips finished blocks
    assert job["spec"]["completions"] == 3 and job["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == [
        "--blocks", "3"]
    status = await cluster.wait_status("site", lambda s: s["stages"]["train"].get("attempt") == 2, "attempt 2")
    assert [b["phase"] for b in blocks(status)] == ["Succeeded", "Pending", "Succeeded"]
    assert status["stages"]["train"]["mergeJob"] == "site-r1-train-merge-a2"
    await cluster.patch_job_status("site-r1-train-a2", {
        "active": 0, "completedIndexes": "0-2", "succeeded": 3, "startTime": "2026-11-25T15:10:00Z",
        "completionTime": "2026-11-25T15:20:00Z", "conditions": [{"type": "Complete", "status": "True"}]})
    await cluster.wait_job("site-r1-train-merge-a2")
    await cluster.succeed_job("site-r1-train-merge-a2", f"{run}/train", result("train", {"gaussians": 7}))
    await cluster.wait_job("site-r1-compress")
    assert "site-r1-sfm-a2" not in {j["metadata"]["name"] for j in await cluster.jobs()}


async def test_a_restarted_operator_builds_the_same_indexed_job_and_one_merge_job(
        cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets, train={"blocks": 2}))
    run = f"s3://{buckets[1]}/site/runs/1"
    await sfm_done(cluster, run, 12)
    await cluster.wait_job("site-r1-train")

    # Killed after writing the blocks to status but before creating the Indexed Job: the next one creates it from
    # status, with the same K, under the same name.
    await cluster.kill_operator()
    await cluster.api.delete("/apis/batch/v1/namespaces/default/jobs/site-r1-train")
    await cluster.api.patch("/apis/spaceport.dev/v1alpha1/namespaces/default/reconstructions/site/status",
                            {"status": {"stages": {"train": {"phase": "Pending"}}}})
    await cluster.start_operator()
    job = await cluster.wait_job("site-r1-train")
    assert job["spec"]["completions"] == 2
    await cluster.wait_status("site", lambda s: s["stages"]["train"]["phase"] == "Running", "train adopted")

    # Both blocks finish while no operator watches: the next one creates the merge Job, once.
    await cluster.kill_operator()
    await cluster.patch_job_status("site-r1-train", {
        "active": 0, "completedIndexes": "0-1", "succeeded": 2, "startTime": "2026-11-25T15:00:00Z",
        "completionTime": "2026-11-25T15:09:00Z", "conditions": [{"type": "Complete", "status": "True"}]})
    await cluster.start_operator()
    await cluster.wait_job("site-r1-train-merge")
    await cluster.kill_operator()
    await cluster.start_operator()
    await cluster.succeed_job("site-r1-train-merge", f"{run}/train", result("train", {"gaussians": 5, "blocks": 2}))
    await cluster.wait_job("site-r1-compress")
    names = sorted(j["metadata"]["name"] for j in await cluster.jobs())
    assert names == ["site-r1-compress", "site-r1-sfm", "site-r1-train", "site-r1-train-merge"]

"""Partitioned training end to end: the operator's Indexed Job run by the kubelet stand-in as the Job controller
runs it, with the REAL stage in every Pod. Two Pods train blocks 0 and 1 (the index from JOB_COMPLETION_INDEX)
into train/blocks/<i>/; block 1's first Pod is stopped mid-training and its index alone is retried (block 0 is not
trained again), resuming from the checkpoint the stopped Pod saved; the merge Job joins the blocks and compress
runs on the merged scene."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from spaceport.contract import PROGRESS_FILE, RESULT_FILE
from spaceport.splats import read_ply
from spaceport.storage import LocalStore
from tests.operator.harness import JOBS, PODS, Cluster, eventually
from tests.production.kubelet import INDEX_KEY, Kubelet, interval_list
from tests.production.results import finished, training_step
from tests.train.fixtures import write_sfm_output

TRAIN = {"blocks": 2, "iterations": 200, "checkpointEvery": 5000, "densifyFrom": 30, "densifyEvery": 30,
         "densifyUntil": 100, "shDegreeInterval": 50, "holdoutEvery": 4, "maxGaussians": 2000}
"""Each block a few seconds of training on 64x48 photos; no periodic checkpoint, so only the one written on
SIGTERM can resume block 1."""
COMPRESS = {"formats": ["sog"], "qualityViews": 0, "kmeansIterations": 2}
JOB = "site-r1-train"


def test_interval_lists_are_written_as_the_job_controller_writes_them() -> None:
    assert interval_list(set()) == ""
    assert interval_list({0, 1, 3, 4, 5, 7}) == "0,1,3-5,7"
    assert interval_list({2}) == "2" and interval_list({0, 1, 2}) == "0-2"


async def test_indexed_jobs_retry_each_index_alone_and_fail_with_failed_indexes(cluster: Cluster,
                                                                              kubelet: Kubelet) -> None:
    """The kubelet stand-in's Job controller: index 0 succeeds, 1 exits 2 (FailIndex: no retry), 2 exits 1 twice
    (backoffLimitPerIndex 1: retried once); the Job fails once every index has ended."""
    script = "import os, sys; sys.exit({0: 0, 1: 2, 2: 1}[int(os.environ['JOB_COMPLETION_INDEX'])])"
    await cluster.api.create(JOBS.format(ns=cluster.ns), {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "indexed"},
        "spec": {"completionMode": "Indexed", "completions": 3, "parallelism": 2, "backoffLimitPerIndex": 1,
                 "podFailurePolicy": {"rules": [{"action": "FailIndex", "onExitCodes": {
                     "containerName": "stage", "operator": "In", "values": [2]}}]},
                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [
                     {"name": "stage", "image": "x", "command": [sys.executable, "-c", script]}]}}}})

    async def ended() -> dict[str, Any] | None:
        job = await cluster.job("indexed")
        return job if job and (job.get("status") or {}).get("conditions") else None

    status = (await eventually(ended, timeout=30, what="the Indexed Job's end"))["status"]
    assert {k: status[k] for k in ("active", "completedIndexes", "failedIndexes", "succeeded", "failed")} == {
        "active": 0, "completedIndexes": "0", "failedIndexes": "1,2", "succeeded": 1, "failed": 3}
    assert [(c["type"], c["reason"]) for c in status["conditions"]] == [("FailureTarget", "FailedIndexes"),
                                                                       ("Failed", "FailedIndexes")]
    assert [(a.index, a.pod) for a in kubelet.attempts["indexed"] if a.index != 2] == [(0, "indexed-0-0"),
                                                                                       (1, "indexed-1-0")]
    assert [a.pod for a in kubelet.attempts["indexed"] if a.index == 2] == ["indexed-2-0", "indexed-2-1"]
    pods = (await cluster.api.get(PODS.format(ns=cluster.ns)))["items"]
    assert sorted((p["metadata"]["name"], p["metadata"]["labels"][INDEX_KEY], p["metadata"]["annotations"][INDEX_KEY],
                   p["status"]["phase"]) for p in pods) == [
        ("indexed-0-0", "0", "0", "Succeeded"), ("indexed-1-0", "1", "1", "Failed"),
        ("indexed-2-0", "2", "2", "Failed"), ("indexed-2-1", "2", "2", "Failed")]


@pytest.mark.slow
async def test_blocks_train_in_an_indexed_job_a_stopped_block_is_retried_alone_then_merged(
        cluster: Cluster, kubelet: Kubelet, volumes: dict[str, Path]) -> None:
    run = volumes["survey-results"] / "site" / "runs" / "1"
    # sfm already done in this run (its fingerprinted result.json is there, so the real sfm stage skips it)
    write_sfm_output(run / "sfm", n_views=16, width=64, height=48, n_points=300, ground=True)
    (volumes["survey-photos"] / "photos").mkdir()
    spec = {"input": {"uri": "photos", "volumeClaim": "survey-photos"},
            "output": {"uri": "site", "volumeClaim": "survey-results"},
            "train": TRAIN, "compress": COMPRESS, "retries": 1}
    (run / "sfm" / "result.json").write_text(finished("sfm", {"imagesUsed": 16, "registeredImages": 16}, spec,
                                                      LocalStore(volumes["survey-photos"] / "photos")))
    await cluster.create_recon("site", spec)

    # a cold kernel cache costs each first Pod ~40 s of compiling
    await eventually(lambda: training_step(run / "train" / "blocks" / "1" / PROGRESS_FILE), timeout=120,
                     what="block 1 training past step 10")
    stopped = await kubelet.kill(JOB, 1)  # SIGTERM without DisruptionTarget: a failure that counts
    await cluster.wait_status("site", lambda s: ((s["stages"]["train"].get("blocks") or [{}, {}])[1]
                                                 .get("failures")) == 1, "block 1's failure in status", 60)
    status = await cluster.wait_status("site", lambda s: s.get("phase") in ("Succeeded", "Failed"), "site done", 180)
    assert status["phase"] == "Succeeded", status["message"]

    # the Indexed Job: one Pod for block 0, two for block 1 (the stopped one, then its retry)
    pods = {i: [a for a in kubelet.attempts[JOB] if a.index == i] for i in (0, 1)}
    assert [a.pod for a in pods[0]] == [f"{JOB}-0-0"] and [a.pod for a in pods[1]] == [f"{JOB}-1-0", f"{JOB}-1-1"]
    assert pods[1][0] is stopped and not stopped.evicted
    assert "stopped by signal 15 at step" in kubelet.logs[stopped.pod]
    stopped_at = int(kubelet.logs[stopped.pod].split("stopped by signal 15 at step ")[1].split(";")[0])
    job = await cluster.job(JOB)
    assert {k: job["status"][k] for k in ("completedIndexes", "failedIndexes", "succeeded", "failed")} == {
        "completedIndexes": "0,1", "failedIndexes": "", "succeeded": 2, "failed": 1}
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]

    # each block trained by the real stage into its folder; block 1's retry went on from the stopped Pod's step
    block_results = [json.loads((run / "train" / "blocks" / str(i) / RESULT_FILE).read_text()) for i in (0, 1)]
    assert [r["metrics"]["block"] for r in block_results] == [0, 1]
    assert block_results[1]["metrics"]["resumedFromStep"] == stopped_at
    assert "resumedFromStep" not in block_results[0]["metrics"]

    # the merge Job and compress, then the Reconstruction's status
    assert [a.pod for a in kubelet.attempts[f"{JOB}-merge"]] == [f"{JOB}-merge-0"]
    assert len(kubelet.attempts["site-r1-compress"]) == 1
    train = status["stages"]["train"]
    assert [(b["index"], b["phase"]) for b in train["blocks"]] == [(0, "Succeeded"), (1, "Succeeded")]
    assert [b.get("failures", 0) for b in train["blocks"]] == [0, 1]
    assert train["phase"] == "Succeeded" and train["metrics"]["blocks"] == 2
    assert train["metrics"]["steps"] == 2 * TRAIN["iterations"]
    merged = read_ply(run / "train" / "splats.ply")
    assert merged.count == train["metrics"]["gaussians"] > 0
    assert status["stages"]["compress"]["phase"] == "Succeeded"
    assert (run / "compress" / "scene.sog").stat().st_size > 0
    assert status["outputs"]["sog"] == str(run / "compress" / "scene.sog")
    assert status["outputs"]["ply"] == str(run / "train" / "splats.ply")  # the merged scene, not a block's

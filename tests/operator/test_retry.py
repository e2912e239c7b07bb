"""Retry: `kubectl annotate recon NAME spaceport.dev/retry=<new value>` goes on from the stage that failed."""

from __future__ import annotations

from spaceport.api import Phase, ReconstructionSpec, ReconstructionStatus
from spaceport.controller import observe as obs
from spaceport.controller import status as st
from tests.operator.harness import RECONS, Cluster
from tests.operator.test_lifecycle import result, spec_for

NOW = "2026-11-25T15:00:00Z"


async def annotate(cluster: Cluster, name: str, value: str) -> None:
    await cluster.api.patch(RECONS.format(ns=cluster.ns) + "/" + name,
                            {"metadata": {"annotations": {"spaceport.dev/retry": value}}})


async def test_retry_reruns_the_failed_stage_and_keeps_the_finished_ones(cluster: Cluster,
                                                                        buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    run = f"s3://{buckets[1]}/site/runs/1"
    await cluster.wait_job("site-r1-sfm")
    await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", result("sfm", {"imagesUsed": 9, "registeredImages": 9}))
    await cluster.wait_job("site-r1-train")
    await cluster.fail_job("site-r1-train", "BackoffLimitExceeded", "Job has reached the specified backoff limit",
                           pod_message='{"stage":"train","reason":"Retryable","message":"out of memory"}', exit_code=1)
    await cluster.wait_status("site", lambda s: s.get("phase") == "Failed", "Failed")

    await annotate(cluster, "site", "1")
    status = await cluster.wait_status("site", lambda s: s.get("retry") == "1", "retry seen")
    assert status["run"] == 1 and status["runUri"] == run  # the same run, not a new one from SfM
    assert status["stages"]["sfm"]["phase"] == "Succeeded" and status["stages"]["sfm"]["metrics"]["imagesUsed"] == 9
    assert status["stages"]["train"]["job"] == "site-r1-train-a2" and status["stages"]["train"]["attempt"] == 2
    await cluster.wait_job("site-r1-train-a2")
    await cluster.wait_events("site", {"Retrying"})

    await cluster.succeed_job("site-r1-train-a2", f"{run}/train", result("train", {"gaussians": 50}))
    await cluster.wait_job("site-r1-compress")
    await cluster.succeed_job("site-r1-compress", f"{run}/compress", result("compress", {"sogBytes": 7}))
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Succeeded", "Succeeded")
    assert status["metrics"]["images"] == 9 and status["metrics"]["gaussians"] == 50
    names = sorted(j["metadata"]["name"] for j in await cluster.jobs())
    assert names == ["site-r1-compress", "site-r1-sfm", "site-r1-train", "site-r1-train-a2"]  # one sfm Job only

    await annotate(cluster, "site", "1")  # the same value again: nothing to do
    await annotate(cluster, "site", "2")  # a new value on a run that did not fail: noted, nothing re-run
    status = await cluster.wait_status("site", lambda s: s.get("retry") == "2", "second value noted")
    assert status["phase"] == "Succeeded" and len(await cluster.jobs()) == 4


def test_a_value_seen_before_a_failure_does_not_retry_it() -> None:
    spec = ReconstructionSpec.model_validate({"input": {"uri": "s3://p/site"}, "output": {"uri": "s3://r/site"}})
    running = st.start_run(ReconstructionStatus(), spec, "site", 1, NOW)
    noted = st.retry_run(running, "site", "x", 1, NOW)
    assert noted.retry == "x" and noted.phase == Phase.PENDING and noted.stages == running.stages

    job = obs.JobView(name="site-r1-sfm", suspended=False, active=0, succeeded=False, failed=True)
    failed = st.next_status(noted, spec, obs.Observation("sfm", job), 1, NOW)
    assert failed.phase == Phase.FAILED and failed.retry == "x"  # the reconciler retries only on a new value
    again = st.retry_run(failed, "site", "y", 1, NOW)
    assert again.stages["sfm"].job == "site-r1-sfm-a2" and again.reason == "Retrying"
    third = st.retry_run(st.next_status(again, spec, obs.Observation("sfm", job), 1, NOW), "site", "z", 1, NOW)
    assert third.stages["sfm"].job == "site-r1-sfm-a3"

"""Faults around the operator: killed between saving Job names and creating Jobs; a Job deleted by hand mid-run."""

from __future__ import annotations

import asyncio

from tests.operator.harness import JOBS, Cluster, eventually
from tests.operator.test_lifecycle import result, spec_for
from tests.operator.test_retry import annotate


async def test_killed_after_saving_job_names_before_creating_the_job(cluster: Cluster,
                                                                    buckets: tuple[str, str]) -> None:
    assert cluster.emulator is not None and cluster.emulator.emu is not None
    emu = cluster.emulator.emu
    emu.unavailable.add(("batch", "jobs"))  # every Job create fails: the operator is stuck right after the save
    await cluster.create_recon("site", spec_for(buckets))
    status = await cluster.wait_status("site", lambda s: s.get("run") == 1, "run 1 saved")
    assert status["stages"]["sfm"]["job"] == "site-r1-sfm" and status["stages"]["sfm"]["phase"] == "Pending"
    await eventually(lambda: _true(bool(emu.refused)), what="a Job create tried and refused")
    await cluster.kill_operator()
    assert not await cluster.jobs()

    emu.unavailable.clear()
    await cluster.start_operator()
    await cluster.wait_job("site-r1-sfm")
    status = await cluster.wait_status("site", lambda s: s["stages"]["sfm"]["phase"] == "Running", "sfm Running")
    assert status["run"] == 1 and status["stages"]["sfm"]["job"] == "site-r1-sfm"  # the names saved, not new ones
    await asyncio.sleep(0.5)  # a few more passes and timer ticks: still one Job
    assert [j["metadata"]["name"] for j in await cluster.jobs()] == ["site-r1-sfm"]


async def test_job_deleted_by_hand_mid_run_fails_with_a_reason_and_retry_continues(
        cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    run = f"s3://{buckets[1]}/site/runs/1"
    await cluster.wait_job("site-r1-sfm")
    await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", result("sfm", {"imagesUsed": 5}))
    await cluster.wait_job("site-r1-train")
    await cluster.start_job("site-r1-train")
    cluster.write_progress(f"{run}/train", 0.4, "step 400/1000", 60.0)
    await cluster.wait_status("site", lambda s: s["stages"]["train"].get("progress") == 0.4, "train at 40%")

    await cluster.api.delete(JOBS.format(ns=cluster.ns) + "/site-r1-train")  # `kubectl delete job` mid-run
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Failed", "Failed, not stuck Running")
    assert status["reason"] == "JobVanished" and status["stage"] == "train"
    assert "site-r1-train disappeared before it finished" in status["message"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "True"
    await cluster.wait_events("site", {"StageFailed"})

    await annotate(cluster, "site", "after-delete")  # and the run goes on from train, sfm kept
    await cluster.wait_job("site-r1-train-a2")
    await cluster.succeed_job("site-r1-train-a2", f"{run}/train", result("train", {"gaussians": 9}))
    await cluster.wait_job("site-r1-compress")
    await cluster.succeed_job("site-r1-compress", f"{run}/compress", result("compress", {"sogBytes": 3}))
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Succeeded", "Succeeded")
    assert status["run"] == 1 and status["metrics"]["images"] == 5
    assert (await cluster.recon("site"))["metadata"]["annotations"]["spaceport.dev/retry"] == "after-delete"


async def _true(value: bool) -> bool:
    return value

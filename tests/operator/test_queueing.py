"""Kueue: queued Jobs start suspended; the test plays Kueue by flipping spec.suspend. Storage Secrets checked first."""

from __future__ import annotations

import asyncio
from typing import Any

from spaceport.api import ReconstructionSpec
from spaceport.controller.jobs import PRIORITY_LABEL, QUEUE_LABEL, Owner, build_job
from spaceport.controller.settings import OperatorSettings
from spaceport.layout import spec_run_key
from tests.operator.harness import JOBS, Cluster, eventually
from tests.operator.test_lifecycle import spec_for


async def kueue_admits(cluster: Cluster, job: str, admitted: bool) -> None:
    """What Kueue does on admission (suspend: false) and on preemption (suspend: true)."""
    await cluster.api.patch(JOBS.format(ns=cluster.ns) + f"/{job}", {"spec": {"suspend": not admitted}})


async def test_queued_jobs_wait_for_kueue_and_suspend_never_fights_it(cluster: Cluster,
                                                                     buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets, queueName="gpu-queue", priorityClass="high"))
    job = await cluster.wait_job("site-r1-sfm")
    assert job["metadata"]["labels"][QUEUE_LABEL] == "gpu-queue"
    assert job["metadata"]["labels"][PRIORITY_LABEL] == "high"
    assert job["spec"]["suspend"] is True
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Queued", "Queued")
    assert status["reason"] == "Queued" and "queue gpu-queue" in status["message"]
    assert "startedAt" not in status["stages"]["sfm"]

    await kueue_admits(cluster, "site-r1-sfm", True)
    await cluster.start_job("site-r1-sfm")
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Running", "Running once admitted")
    assert status["stages"]["sfm"]["startedAt"]

    await kueue_admits(cluster, "site-r1-sfm", False)  # Kueue preempts the workload
    await cluster.wait_status("site", lambda s: s.get("phase") == "Queued", "Queued again")
    await asyncio.sleep(0.6)  # three polls: the operator must leave Kueue's flag alone
    assert (await cluster.job("site-r1-sfm"))["spec"]["suspend"] is True

    # A user's suspend in a queue deletes the Job (freeing the quota); resume puts a new one in the queue.
    await cluster.patch_spec("site", {"suspend": True})
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Suspended", "Suspended")
    assert "queue gpu-queue" in status["message"]
    await eventually(lambda: _no_job(cluster, "site-r1-sfm"), what="the queued Job deleted")
    await cluster.patch_spec("site", {"suspend": False})
    job = await cluster.wait_job("site-r1-sfm")
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE_LABEL] == "gpu-queue"
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Queued", "back in the queue")
    assert status["run"] == 1
    reasons = [e["reason"] for e in await cluster.wait_events("site", {"StageQueued", "StageAdmitted",
                                                                         "StageSuspended"})]
    assert {"StageQueued", "StageAdmitted", "StageSuspended"} <= set(reasons)


async def _no_job(cluster: Cluster, name: str) -> bool:
    return await cluster.job(name) is None


def test_default_queue_from_the_operator_settings() -> None:
    spec = ReconstructionSpec.model_validate(spec_for(("a", "b")))
    owner = Owner("site", "default", "uid-1")
    plain = build_job(owner, spec, 1, "train", OperatorSettings())
    assert QUEUE_LABEL not in plain["metadata"]["labels"] and plain["spec"]["suspend"] is False
    queued = build_job(owner, spec, 1, "train", OperatorSettings(default_queue_name="team-a"))
    assert queued["metadata"]["labels"][QUEUE_LABEL] == "team-a" and queued["spec"]["suspend"] is True
    assert PRIORITY_LABEL not in queued["metadata"]["labels"]
    assert QUEUE_LABEL not in queued["spec"]["template"]["metadata"]["labels"]  # Kueue reads the Job's labels
    own = ReconstructionSpec.model_validate(spec_for(("a", "b"), queueName="mine"))
    assert build_job(owner, own, 1, "train", OperatorSettings(default_queue_name="team-a"))[
        "metadata"]["labels"][QUEUE_LABEL] == "mine"
    assert OperatorSettings.from_env({"SPACEPORT_DEFAULT_QUEUE_NAME": "q"}).default_queue_name == "q"
    # queueing changes no result: the run (and its folder) stays the same
    assert spec_run_key(own) == spec_run_key(spec)


def _secret_spec(buckets: tuple[str, str], secret: str) -> dict[str, Any]:
    spec = spec_for(buckets)
    spec["input"]["credentialsSecret"] = spec["output"]["credentialsSecret"] = secret
    return spec


async def test_secret_without_keys_fails_and_a_missing_one_is_waited_for(cluster: Cluster,
                                                                        buckets: tuple[str, str]) -> None:
    await cluster.create_secret("empty-creds", {"region": "eu-west-1"})
    await cluster.create_recon("nokeys", _secret_spec(buckets, "empty-creds"))
    status = await cluster.wait_status("nokeys", lambda s: s.get("phase") == "Failed", "Failed")
    assert status["reason"] == "BadCredentials"
    assert status["message"].startswith("spec.input.credentialsSecret: Secret 'empty-creds' lacks "
                                        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (it has: region)")

    await cluster.create_recon("later", _secret_spec(buckets, "later-creds"))
    status = await cluster.wait_status("later", lambda s: s.get("reason") == "WaitingForSecret", "waiting")
    assert status["phase"] == "Pending" and "'later-creds'" in status["message"]
    assert not await cluster.jobs()
    await cluster.create_secret("later-creds", {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    await cluster.wait_job("later-r1-sfm")
    await cluster.wait_status("later", lambda s: s.get("phase") == "Running", "Running")

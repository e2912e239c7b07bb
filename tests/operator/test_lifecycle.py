"""The operator end to end over HTTP: emulated API server, kopf in-process, S3 on moto."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import yaml

from spaceport.api import ReconstructionSpec
from spaceport.contract import StageResult
from tests.operator.conftest import SECRET_VALUE
from tests.operator.harness import ROOT, Cluster, eventually


def spec_for(buckets: tuple[str, str], **extra: Any) -> dict[str, Any]:
    photos, results = buckets
    return {"input": {"uri": f"s3://{photos}/site", "credentialsSecret": "s3-creds"},
            "output": {"uri": f"s3://{results}/site", "credentialsSecret": "s3-creds"}, **extra}


def result(stage: str, metrics: dict[str, Any], outputs: dict[str, str] | None = None) -> StageResult:
    return StageResult(stage=stage, started_at="2026-11-25T15:00:00Z", finished_at="2026-11-25T15:05:00Z",
                       duration_seconds=300.0, metrics=metrics, outputs=outputs or {})


async def test_happy_path_three_stages_with_metrics(cluster: Cluster, buckets: tuple[str, str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await cluster.create_recon("site", spec_for(buckets))
    run = f"s3://{buckets[1]}/site/runs/1"

    job = await cluster.wait_job("site-r1-sfm")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Reconstruction"
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Running", "Running")
    assert status["run"] == 1 and status["runUri"] == run
    assert {s: v["job"] for s, v in status["stages"].items()} == {
        "sfm": "site-r1-sfm", "train": "site-r1-train", "compress": "site-r1-compress"}

    await cluster.start_job("site-r1-sfm")
    cluster.write_progress(f"{run}/sfm", 0.5, "matching features", 42.0)
    status = await cluster.wait_status("site", lambda s: s["stages"]["sfm"].get("progress") == 0.5, "progress")
    assert status["stages"]["sfm"]["message"] == "matching features"
    assert status["stages"]["sfm"]["etaSeconds"] == 42.0
    assert status["progress"] == 10.0  # half of sfm's 20 % share

    await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", result(
        "sfm", {"imagesUsed": 40, "imagesFound": 41, "registeredImages": 38}))
    await cluster.wait_job("site-r1-train")
    await cluster.succeed_job("site-r1-train", f"{run}/train", result(
        "train", {"gaussians": 120000, "psnr": 27.5, "ssim": 0.88, "plyBytes": 28_000_000}))
    await cluster.wait_job("site-r1-compress")
    await cluster.succeed_job("site-r1-compress", f"{run}/compress", result(
        "compress", {"sogBytes": 1_400_000, "compressionRatio": 20.0, "psnrDropDb": 0.4},
        {"sog": f"{run}/compress/scene.sog", "viewer": f"{run}/compress/viewer/index.html"}))

    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Succeeded", "Succeeded")
    assert status["metrics"] == {
        "images": 40, "imagesFound": 41, "registeredImages": 38, "gaussians": 120000, "psnr": 27.5, "ssim": 0.88,
        "plyBytes": 28_000_000, "sogBytes": 1_400_000, "compressionRatio": 20.0, "psnrDropDb": 0.4,
        "durations": {"sfm": 300.0, "train": 300.0, "compress": 300.0}}
    assert status["outputs"] == {"ply": f"{run}/train/splats.ply", "sog": f"{run}/compress/scene.sog",
                                 "viewer": f"{run}/compress/viewer/index.html"}
    assert status["progress"] == 100.0 and status["stage"] == "compress"
    assert [c["status"] for c in status["conditions"] if c["type"] == "Ready"] == ["True"]
    assert len(await cluster.jobs()) == 3
    assert cluster.pruned() == []  # the API server dropped nothing the operator or the test wrote

    await cluster.patch_spec("site", {"retries": 1})  # seen, but a finished run stays finished
    status = await cluster.wait_status("site", lambda s: s.get("observedGeneration") == 2, "generation 2 seen")
    assert status["phase"] == "Succeeded" and status["run"] == 1

    from prometheus_client import REGISTRY

    assert (REGISTRY.get_sample_value("spaceport_jobs_created_total", {"stage": "compress"}) or 0) >= 1

    events = await cluster.wait_events("site", {"RunStarted", "StageStarted", "StageSucceeded", "Succeeded"})
    reasons = [e["reason"] for e in events]
    for reason in ("RunStarted", "StageStarted", "StageSucceeded", "Succeeded"):
        assert reason in reasons
    leaks = [json.dumps(events), json.dumps(await cluster.recon("site")), caplog.text]
    assert not [text for text in leaks if SECRET_VALUE in text]
    assert "progress.json" in caplog.text  # the logs did cover the S3 reads made with that Secret


async def test_restart_mid_stage_never_duplicates_a_job(cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    run = f"s3://{buckets[1]}/site/runs/1"
    await cluster.wait_status("site", lambda s: s.get("phase") == "Running", "Running")

    # Killed after creating the sfm Job but before recording it: status still says the stage is Pending.
    await cluster.kill_operator()
    await cluster.api.patch("/apis/spaceport.dev/v1alpha1/namespaces/default/reconstructions/site/status",
                            {"status": {"phase": "Pending", "stages": {"sfm": {"phase": "Pending"}}}})
    await cluster.start_operator()
    await cluster.wait_status("site", lambda s: s["stages"]["sfm"]["phase"] == "Running", "sfm adopted")
    assert [j["metadata"]["name"] for j in await cluster.jobs()] == ["site-r1-sfm"]

    # Killed again; the stage finishes while nobody watches; the next operator carries on.
    await cluster.kill_operator()
    await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", result("sfm", {"images": 3, "registeredImages": 3}))
    await cluster.start_operator()
    await cluster.wait_job("site-r1-train")
    await cluster.succeed_job("site-r1-train", f"{run}/train", result("train", {"gaussians": 10}))
    await cluster.kill_operator()
    await cluster.start_operator()
    await cluster.wait_job("site-r1-compress")
    await cluster.succeed_job("site-r1-compress", f"{run}/compress", result("compress", {"sogBytes": 5}))
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Succeeded", "Succeeded")
    assert status["run"] == 1 and status["metrics"]["gaussians"] == 10
    names = sorted(j["metadata"]["name"] for j in await cluster.jobs())
    assert names == ["site-r1-compress", "site-r1-sfm", "site-r1-train"]


async def test_job_failure_gives_failed_with_stage_and_reason(cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    await cluster.wait_job("site-r1-sfm")
    await cluster.fail_job("site-r1-sfm", "PodFailurePolicy", "Container stage exited with 2 matching FailJob rule",
                           pod_message='{"stage":"sfm","reason":"BadInput","message":"input: no images under site/"}')
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Failed", "Failed")
    assert status["reason"] == "StageFailed" and status["stage"] == "sfm"
    assert status["message"] == "sfm failed: BadInput: input: no images under site/"
    assert status["stages"]["sfm"]["phase"] == "Failed"
    assert [j["metadata"]["name"] for j in await cluster.jobs()] == ["site-r1-sfm"]  # no train after a failure


async def test_job_failure_without_message_uses_job_condition(cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    await cluster.wait_job("site-r1-sfm")
    await cluster.fail_job("site-r1-sfm", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Failed", "Failed")
    assert status["message"] == "sfm failed: BackoffLimitExceeded: Job has reached the specified backoff limit"


async def test_vanished_job_is_never_reported_running(cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    await cluster.wait_status("site", lambda s: s.get("phase") == "Running", "Running")
    await cluster.api.delete("/apis/batch/v1/namespaces/default/jobs/site-r1-sfm")
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Failed", "Failed")
    assert status["reason"] == "JobVanished" and "site-r1-sfm" in status["message"]


async def test_suspend_and_resume(cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    await cluster.wait_job("site-r1-sfm")
    await cluster.patch_spec("site", {"suspend": True})
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Suspended", "Suspended")
    assert status["run"] == 1 and status["reason"] == "Suspended"
    assert (await cluster.job("site-r1-sfm"))["spec"]["suspend"] is True

    await cluster.patch_spec("site", {"suspend": False})
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Running", "Running again")
    assert status["run"] == 1
    assert (await cluster.job("site-r1-sfm"))["spec"]["suspend"] is False
    assert len(await cluster.jobs()) == 1


async def test_spec_change_starts_a_new_run_and_keeps_old_output(cluster: Cluster,
                                                                 buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    run1 = f"s3://{buckets[1]}/site/runs/1"
    await cluster.wait_job("site-r1-sfm")
    await cluster.succeed_job("site-r1-sfm", f"{run1}/sfm", result("sfm", {"images": 3}))
    await cluster.wait_job("site-r1-train")
    cluster.s3_put(f"{run1}/train/checkpoints/step-1000.pt", b"weights")
    before = cluster.s3_keys(run1)

    await cluster.patch_spec("site", {"train": {"iterations": 1000}})
    status = await cluster.wait_status("site", lambda s: s.get("run") == 2, "run 2")
    assert status["runUri"] == f"s3://{buckets[1]}/site/runs/2"
    await cluster.wait_job("site-r2-sfm")
    names = sorted(j["metadata"]["name"] for j in await cluster.jobs())
    assert names == ["site-r2-sfm"]  # the old run's Jobs are gone
    assert cluster.s3_keys(run1) == before  # and its output untouched
    job = await cluster.job("site-r2-sfm")
    assert f"s3://{buckets[1]}/site/runs/2/sfm" in job["spec"]["template"]["spec"]["containers"][0]["args"]

    await cluster.patch_spec("site", {"retries": 5, "suspend": False})  # neither changes results
    await cluster.wait_status("site", lambda s: s.get("observedGeneration") == 3, "generation 3 seen")
    assert (await cluster.recon("site"))["status"]["run"] == 2


async def test_delete_removes_jobs_and_keeps_outputs(cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    run = f"s3://{buckets[1]}/site/runs/1"
    await cluster.wait_job("site-r1-sfm")
    await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", result("sfm", {"images": 3}))
    await cluster.wait_job("site-r1-train")
    await eventually(lambda: _has_finalizer(cluster, "site"), what="kopf's finalizer")
    await cluster.api.delete("/apis/spaceport.dev/v1alpha1/namespaces/default/reconstructions/site")
    # Deleted at once, possibly before the finalizer lands: the DELETED event cleans up too.
    await cluster.create_recon("quick", spec_for(buckets, output={"uri": f"s3://{buckets[1]}/quick",
                                                                  "credentialsSecret": "s3-creds"}))
    await cluster.wait_job("quick-r1-sfm")
    await cluster.api.delete("/apis/spaceport.dev/v1alpha1/namespaces/default/reconstructions/quick")

    async def gone() -> bool:
        return await cluster.recon("site") is None and await cluster.recon("quick") is None \
            and not await cluster.jobs()

    await eventually(gone, what="Reconstructions and Jobs deleted")
    assert cluster.s3_keys(f"{run}/sfm") == ["site/runs/1/sfm/result.json"]


async def _has_finalizer(cluster: Cluster, name: str) -> bool:
    return "spaceport.dev/cleanup" in ((await cluster.recon(name)) or {}).get("metadata", {}).get("finalizers", [])


async def test_invalid_spec_fails_naming_the_field(cluster: Cluster, buckets: tuple[str, str]) -> None:
    spec = spec_for(buckets)
    spec["output"] = {"uri": "http://example.com/out"}
    await cluster.create_recon("bad", spec)
    status = await cluster.wait_status("bad", lambda s: s.get("phase") == "Failed", "Failed")
    assert status["reason"] == "InvalidSpec"
    assert status["message"].startswith("spec.output.uri: ")
    assert not await cluster.jobs()
    with pytest.raises(AssertionError, match=r"422.*spec.train.iterations: 0 is less than the minimum of 1"):
        await cluster.patch_spec("bad", {"train": {"iterations": 0}})  # the CRD schema, checked by the server

    spec["output"] = {"uri": f"s3://{buckets[1]}/bad"}
    await cluster.patch_spec("bad", spec)  # fixing it starts a run
    await cluster.wait_job("bad-r1-sfm")

    # Breaking it again stops that run. (Out-of-range values never get here: the API server checks the
    # CRD schema. Rules across fields, like this one, only the operator's models know.)
    await cluster.patch_spec("bad", {"output": {"uri": f"{spec['input']['uri']}/out"}})
    status = await cluster.wait_status("bad", lambda s: s.get("reason") == "InvalidSpec", "InvalidSpec again")
    assert status["message"].startswith("spec: ") and "output.uri" in status["message"]
    assert status["stages"]["sfm"]["phase"] == "Failed"
    await eventually(lambda: _no_jobs(cluster), what="run 1's Job deleted")
    await cluster.patch_spec("bad", {"output": spec["output"]})  # the same valid spec as run 1
    await cluster.wait_job("bad-r2-sfm")
    status = await cluster.wait_status("bad", lambda s: s.get("phase") == "Running", "Running")
    assert status["run"] == 2


async def _no_jobs(cluster: Cluster) -> bool:
    return not await cluster.jobs()


async def test_volume_outputs_take_metrics_from_termination_messages(cluster: Cluster) -> None:
    spec = yaml.safe_load((ROOT / "examples" / "reconstruction-pvc.yaml").read_text())["spec"]
    await cluster.create_recon("bridge", spec)
    job = await cluster.wait_job("bridge-r1-sfm")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[1] == "/mnt/spaceport/input/surveys/bridge-7/2026-11-24"
    assert args[3] == "/mnt/spaceport/output/reconstructions/bridge-7/runs/1/sfm"
    await cluster.succeed_job("bridge-r1-sfm", "unused", result("sfm", {"images": 7, "registeredImages": 6}),
                              in_storage=False)
    status = await cluster.wait_status("bridge", lambda s: s["stages"]["sfm"]["phase"] == "Succeeded", "sfm done")
    assert status["stages"]["sfm"]["metrics"] == {"images": 7, "registeredImages": 6, "durationSeconds": 300.0}
    assert status["runUri"] == "reconstructions/bridge-7/runs/1"


def test_examples_are_valid_specs() -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(examples) >= 2
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Reconstruction":
                ReconstructionSpec.model_validate(doc["spec"])

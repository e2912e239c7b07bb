"""The operator end to end over HTTP: emulated API server, kopf in-process, S3 on moto."""

from __future__ import annotations

from typing import Any

from spaceport.contract import StageResult
from tests.operator.harness import Cluster


def spec_for(buckets: tuple[str, str], **extra: Any) -> dict[str, Any]:
    photos, results = buckets
    return {"input": {"uri": f"s3://{photos}/site", "credentialsSecret": "s3-creds"},
            "output": {"uri": f"s3://{results}/site", "credentialsSecret": "s3-creds"}, **extra}


def result(stage: str, metrics: dict[str, Any], outputs: dict[str, str] | None = None) -> StageResult:
    return StageResult(stage=stage, started_at="2026-11-25T15:00:00Z", finished_at="2026-11-25T15:05:00Z",
                       duration_seconds=300.0, metrics=metrics, outputs=outputs or {})


async def test_happy_path_three_stages_with_metrics(cluster: Cluster, buckets: tuple[str, str]) -> None:
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

    await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", result("sfm", {"images": 40, "registeredImages": 38}))
    await cluster.wait_job("site-r1-train")
    await cluster.succeed_job("site-r1-train", f"{run}/train", result(
        "train", {"gaussians": 120000, "psnr": 27.5, "ssim": 0.88, "plyBytes": 28_000_000}))
    await cluster.wait_job("site-r1-compress")
    await cluster.succeed_job("site-r1-compress", f"{run}/compress", result(
        "compress", {"sogBytes": 1_400_000, "compressionRatio": 20.0, "psnrDropDb": 0.4},
        {"sog": f"{run}/compress/scene.sog", "viewer": f"{run}/compress/viewer/index.html"}))

    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Succeeded", "Succeeded")
    assert status["metrics"] == {
        "images": 40, "registeredImages": 38, "gaussians": 120000, "psnr": 27.5, "ssim": 0.88,
        "plyBytes": 28_000_000, "sogBytes": 1_400_000, "compressionRatio": 20.0, "psnrDropDb": 0.4,
        "durations": {"sfm": 300.0, "train": 300.0, "compress": 300.0}}
    assert status["outputs"] == {"ply": f"{run}/train/splats.ply", "sog": f"{run}/compress/scene.sog",
                                 "viewer": f"{run}/compress/viewer/index.html"}
    assert status["progress"] == 100.0 and status["stage"] == "compress"
    assert [c["status"] for c in status["conditions"] if c["type"] == "Ready"] == ["True"]
    assert len(await cluster.jobs()) == 3

    events = cluster.emu.list("", "events", "default")
    reasons = [e["reason"] for e in events if e["involvedObject"]["name"] == "site"]
    for reason in ("RunStarted", "StageStarted", "StageSucceeded", "Succeeded"):
        assert reason in reasons
    assert all("testing" not in e["message"] for e in events)  # no credential values leak into Events

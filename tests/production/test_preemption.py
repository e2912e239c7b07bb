"""A training Pod evicted mid-run (GPU preemption) is replaced without counting as a failure, and the REAL
train stage in the new Pod continues from the checkpoint the evicted one saved on SIGTERM, not from step 0."""

from __future__ import annotations

from pathlib import Path

from spaceport.contract import PROGRESS_FILE
from spaceport.storage import LocalStore
from tests.operator.harness import Cluster, eventually
from tests.production.kubelet import Kubelet
from tests.production.results import finished, training_step
from tests.train.fixtures import write_sfm_output

TRAIN = {"iterations": 2000, "checkpointEvery": 5000, "densifyFrom": 40, "densifyEvery": 40, "densifyUntil": 120,
         "shDegreeInterval": 50, "holdoutEvery": 4}
"""A small scene's training (~200 steps/s here, so the eviction lands mid-run); no periodic checkpoint before
it, so only the one written on SIGTERM can resume it."""


async def test_evicted_training_resumes_from_its_checkpoint(cluster: Cluster, kubelet: Kubelet,
                                                            volumes: dict[str, Path]) -> None:
    run = volumes["survey-results"] / "site" / "runs" / "1"
    # sfm already done in this run (its result.json is there, so the real sfm stage skips it)
    write_sfm_output(run / "sfm", n_views=8, width=64, height=48, n_points=200)
    (volumes["survey-photos"] / "photos").mkdir()
    spec = {"input": {"uri": "photos", "volumeClaim": "survey-photos"},
            "output": {"uri": "site", "volumeClaim": "survey-results"},
            "train": TRAIN, "retries": 0}  # no retries at all: only an ignored eviction lets it go on
    (run / "sfm" / "result.json").write_text(finished("sfm", {"imagesUsed": 8, "registeredImages": 8}, spec,
                                                      LocalStore(volumes["survey-photos"] / "photos")))
    await cluster.create_recon("site", spec)

    # a cold kernel cache costs the first Pod ~40 s of compiling
    await eventually(lambda: training_step(run / "train" / PROGRESS_FILE), timeout=120, what="training past step 10")
    await kubelet.evict("site-r1-train")
    status = await cluster.wait_status("site", lambda s: s["stages"]["train"]["phase"] in ("Succeeded", "Failed"),
                                       "train finished", 90)
    train = status["stages"]["train"]
    assert train["phase"] == "Succeeded", status["message"]
    first, second = kubelet.attempts["site-r1-train"]
    assert first.evicted and not second.evicted
    assert "stopped by signal 15 at step" in kubelet.logs[first.pod]
    stopped_at = int(kubelet.logs[first.pod].split("stopped by signal 15 at step ")[1].split(";")[0])
    assert 10 <= stopped_at < TRAIN["iterations"]
    assert train["metrics"]["resumedFromStep"] == stopped_at  # the second Pod went on from there, not step 0
    assert train["metrics"]["steps"] == TRAIN["iterations"]
    job = await cluster.job("site-r1-train")
    assert not job["status"].get("failed")  # the eviction did not count against backoffLimit (0 here)

"""Status that standard tools read: conditions with observedGeneration, `kubectl wait`, outputs that exist."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from spaceport.api import Phase, ReconstructionSpec, ReconstructionStatus
from spaceport.api.reconstruction import StageStatus
from spaceport.controller import status as st
from tests.chart.test_argocd_health import argocd_health
from tests.operator.harness import Cluster
from tests.operator.test_kubectl import kubectl
from tests.operator.test_lifecycle import result, spec_for

NOW, LATER = "2026-11-25T15:00:00Z", "2026-11-25T16:00:00Z"
SPEC = ReconstructionSpec.model_validate({"input": {"uri": "s3://photos/site"}, "output": {"uri": "s3://out/site"}})


def conditions(status: ReconstructionStatus) -> dict[str, tuple[str, str, int | None]]:
    return {c.type: (c.status, c.reason, c.observed_generation) for c in status.conditions}


@pytest.mark.parametrize(("phase", "reason", "ready", "failed", "reconciling"), [
    (Phase.PENDING, "Created", "False", "False", "True"),
    (Phase.QUEUED, "Queued", "False", "False", "True"),
    (Phase.RUNNING, "StageRunning", "False", "False", "True"),
    (Phase.SUSPENDED, "Suspended", "False", "False", "False"),
    (Phase.SUCCEEDED, "Completed", "True", "False", "False"),
    (Phase.FAILED, "StageFailed", "False", "True", "False"),
])
def test_conditions_for_each_phase(phase: Phase, reason: str, ready: str, failed: str, reconciling: str) -> None:
    status = st.with_conditions(ReconstructionStatus(phase=phase, reason=reason, message="m", observed_generation=4),
                                NOW)
    assert conditions(status) == {"Ready": (ready, reason, 4), "Succeeded": (ready, reason, 4),
                                  "Failed": (failed, reason, 4), "Reconciling": (reconciling, reason, 4),
                                  "Stalled": (failed, reason, 4)}
    assert all(c.message == "m" and c.last_transition_time == NOW for c in status.conditions)


def test_transition_time_moves_only_when_the_status_does() -> None:
    running = st.with_conditions(ReconstructionStatus(phase=Phase.RUNNING, reason="StageRunning",
                                                      observed_generation=1), NOW)
    still = st.with_conditions(running.model_copy(update={"message": "train running", "observed_generation": 2}),
                               LATER)
    times = {c.type: c.last_transition_time for c in still.conditions}
    assert set(times.values()) == {NOW} and {c.observed_generation for c in still.conditions} == {2}
    done = st.with_conditions(still.model_copy(update={"phase": Phase.SUCCEEDED, "reason": "Completed"}), LATER)
    moved = {c.type for c in done.conditions if c.last_transition_time == LATER}
    assert moved == {"Ready", "Succeeded", "Reconciling"}  # Failed and Stalled stayed False


def test_outputs_name_only_what_the_formats_made() -> None:
    spec = ReconstructionSpec.model_validate({**SPEC.to_wire(), "compress": {"formats": ["sog-unbundled"]}})
    done = StageStatus(phase=Phase.SUCCEEDED)
    # Results cut from a termination message name no outputs: the contract's files, for the formats asked for.
    outputs = st.aggregate_outputs(spec, 1, {"sfm": done, "train": done, "compress": done})
    assert outputs == {"ply": "s3://out/site/runs/1/train/splats.ply"}
    named = done.model_copy(update={"outputs": {"sogUnbundled": "s3://out/site/runs/1/compress/sog/meta.json"}})
    outputs = st.aggregate_outputs(spec, 1, {"sfm": done, "train": done, "compress": named})
    assert outputs == {"ply": "s3://out/site/runs/1/train/splats.ply",
                       "sogUnbundled": "s3://out/site/runs/1/compress/sog/meta.json"}
    assert st.aggregate_outputs(SPEC, 1, {"sfm": done, "train": done})["ply"].endswith("splats.ply")
    assert "sog" not in st.aggregate_outputs(SPEC, 1, {"sfm": done, "train": done})  # compress never ran


async def _wait(cluster: Cluster, tmp_path: Path, name: str, condition: str, timeout: str) -> tuple[bool, float]:
    t0 = time.monotonic()
    try:
        await kubectl(cluster, tmp_path, "wait", f"recon/{name}", f"--for=condition={condition}",
                      f"--timeout={timeout}")
        return True, time.monotonic() - t0
    except AssertionError:
        return False, time.monotonic() - t0


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_wait_and_argocd_follow_success_and_failure(cluster: Cluster, buckets: tuple[str, str],
                                                                  tmp_path: Path) -> None:
    await cluster.create_recon("good", spec_for(buckets))
    await cluster.create_recon("bad", spec_for(buckets, output={"uri": f"s3://{buckets[1]}/bad",
                                                                "credentialsSecret": "s3-creds"}))
    await cluster.wait_status("good", lambda s: s.get("phase") == "Running", "Running")
    assert argocd_health(await cluster.recon("good"))["status"] == "Progressing"
    assert await _wait(cluster, tmp_path, "good", "Reconciling=false", "1s") == (False, pytest.approx(1, abs=1))

    waiting = asyncio.gather(_wait(cluster, tmp_path, "good", "Ready", "30s"),
                             _wait(cluster, tmp_path, "bad", "Reconciling=false", "30s"))
    await cluster.wait_job("bad-r1-sfm")
    await cluster.fail_job("bad-r1-sfm", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    run = f"s3://{buckets[1]}/site/runs/1"
    for stage in ("sfm", "train", "compress"):
        await cluster.wait_job(f"good-r1-{stage}")
        await cluster.succeed_job(f"good-r1-{stage}", f"{run}/{stage}", result(stage, {}))
    (good_ok, _), (bad_ended, bad_seconds) = await waiting
    assert good_ok and bad_ended and bad_seconds < 20  # the failed run ended the wait at once, not at its timeout
    assert (await _wait(cluster, tmp_path, "bad", "Ready", "1s"))[0] is False
    assert (await _wait(cluster, tmp_path, "bad", "Failed", "1s"))[0] is True

    good, bad = await cluster.recon("good"), await cluster.recon("bad")
    assert argocd_health(good) == {"status": "Healthy", "message": "all stages done"}
    assert argocd_health(bad)["status"] == "Degraded" and "BackoffLimitExceeded" in argocd_health(bad)["message"]
    for body in (good, bad):
        assert {c["type"] for c in body["status"]["conditions"]} == set(st.CONDITION_TYPES)
        assert {c["observedGeneration"] for c in body["status"]["conditions"]} == {body["metadata"]["generation"]}
    assert cluster.pruned() == []

    await cluster.patch_spec("good", {"retries": 3})  # a new generation: conditions speak for it once seen
    body = await cluster.wait_status("good", lambda s: {c["observedGeneration"] for c in s["conditions"]} == {2},
                                     "conditions of generation 2")
    assert body["phase"] == "Succeeded"

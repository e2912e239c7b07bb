"""status.usage: requested CPUs/GPUs times Job wall time per stage, summed, priced with the operator's prices."""

from __future__ import annotations

import pytest

from spaceport.controller.settings import OperatorSettings
from spaceport.controller.usage import cpu_cores, requested
from tests.operator.harness import Cluster
from tests.operator.test_lifecycle import result, spec_for


def test_quantities_and_requests() -> None:
    assert [cpu_cores(q) for q in ("4", "500m", 2, "1.5", None, "lots")] == [4.0, 0.5, 2.0, 1.5, 0.0, 0.0]
    job = {"spec": {"template": {"spec": {"containers": [{"resources": {
        "requests": {"cpu": "250m"}, "limits": {"cpu": "8", "nvidia.com/gpu": 2}}}]}}}}
    assert requested(job) == (0.25, 2.0)  # requests win over limits: they are what the scheduler reserves
    assert OperatorSettings.from_env({"SPACEPORT_PRICE_GPU_HOUR": "2.5"}).price_gpu_hour == 2.5


async def test_usage_per_stage_and_priced_total(cluster: Cluster, buckets: tuple[str, str]) -> None:
    await cluster.kill_operator()
    priced = OperatorSettings(progress_interval_s=0.2, price_cpu_hour=0.05, price_gpu_hour=2.5, price_currency="EUR")
    cluster.settings = lambda: priced  # type: ignore[method-assign]
    await cluster.start_operator()
    spec = spec_for(buckets)
    spec["sfm"] = {"scheduling": {"resources": {"requests": {"cpu": "2"}}}}
    await cluster.create_recon("site", spec)
    run = f"s3://{buckets[1]}/site/runs/1"
    for stage in ("sfm", "train", "compress"):
        await cluster.wait_job(f"site-r1-{stage}")
        await cluster.start_job(f"site-r1-{stage}")  # startTime 15:00; completion at 15:05: 300 s each
        await cluster.succeed_job(f"site-r1-{stage}", f"{run}/{stage}", result(stage, {}))
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Succeeded", "Succeeded")
    stages = {name: s["usage"] for name, s in status["stages"].items()}
    assert stages["sfm"] == {"wallSeconds": 300.0, "cpuSeconds": 600.0, "gpuSeconds": 0.0}  # its own 2 CPUs
    assert stages["train"] == {"wallSeconds": 300.0, "cpuSeconds": 1200.0, "gpuSeconds": 300.0}  # chart default
    assert stages["compress"]["cpuSeconds"] == 1200.0
    total = status["usage"]
    assert (total["wallSeconds"], total["cpuSeconds"], total["gpuSeconds"]) == (900.0, 3000.0, 300.0)
    assert total["cost"] == pytest.approx(3000 / 3600 * 0.05 + 300 / 3600 * 2.5, abs=1e-4)
    assert total["currency"] == "EUR"

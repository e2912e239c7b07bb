"""Two operator replicas in a kopf peering (the chart's HA mode): one acts, the other takes over."""

from __future__ import annotations

import pytest

from spaceport.contract import StageResult
from tests.operator.harness import ROOT, Cluster, eventually

PEERING = "/apis/kopf.dev/v1/clusterkopfpeerings"


@pytest.mark.skipif(not (ROOT / "charts/spaceport/crds/kopf-peering.yaml").exists(), reason="no peering CRDs")
async def test_standby_replica_takes_over_without_duplicates(s3: object, moto_url: str,
                                                            buckets: tuple[str, str]) -> None:
    from tests.operator.harness import running_cluster

    async with running_cluster(s3, moto_url, operator=False) as cluster:
        await cluster.api.create(PEERING, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                           "metadata": {"name": "spaceport"}})
        leader = await cluster.start_operator(peering="spaceport", priority=0)
        await cluster.start_operator(peering="spaceport", priority=-1)
        await eventually(lambda: _peers(cluster), what="both replicas in the peering")
        await _run_first_stage(cluster, buckets)
        await cluster.kill_operator(leader)  # its peering record expires after 2 s; then the standby acts

        run = f"s3://{buckets[1]}/site/runs/1"
        await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", StageResult(
            stage="sfm", started_at="a", finished_at="b", duration_seconds=1.0, metrics={"images": 2}))
        await cluster.wait_job("site-r1-train", timeout=20)
        status = await cluster.wait_status("site", lambda s: s["stages"]["train"]["phase"] == "Running", "train")
        assert status["run"] == 1
        assert sorted(j["metadata"]["name"] for j in await cluster.jobs()) == ["site-r1-sfm", "site-r1-train"]


async def _run_first_stage(cluster: Cluster, buckets: tuple[str, str]) -> None:
    photos, results = buckets
    await cluster.create_recon("site", {"input": {"uri": f"s3://{photos}/site"},
                                        "output": {"uri": f"s3://{results}/site"}})
    await cluster.wait_job("site-r1-sfm", timeout=20)
    assert len(await cluster.jobs()) == 1


async def _peers(cluster: Cluster) -> bool:
    peering = await cluster.api.get(PEERING + "/spaceport")
    return len((peering or {}).get("status") or {}) == 2

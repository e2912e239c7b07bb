"""Outputs are owned: owner.json at the output prefix, run numbers from storage too, OutputInUse for a second owner."""

from __future__ import annotations

import json

from tests.operator.harness import RECONS, Cluster, eventually
from tests.operator.test_lifecycle import result, spec_for
from tests.operator.test_retry import annotate


async def test_recreated_reconstruction_continues_at_the_next_free_run(cluster: Cluster,
                                                                       buckets: tuple[str, str]) -> None:
    out = f"s3://{buckets[1]}/site"
    first = await cluster.create_recon("site", spec_for(buckets))
    await cluster.wait_job("site-r1-sfm")
    owner = json.loads(cluster.s3.get_object(Bucket=buckets[1], Key="site/owner.json")["Body"].read())
    assert (owner["namespace"], owner["name"], owner["uid"]) == ("default", "site", first["metadata"]["uid"])
    await cluster.succeed_job("site-r1-sfm", f"{out}/runs/1/sfm", result("sfm", {"imagesUsed": 3}))
    await cluster.wait_job("site-r1-train")
    before = cluster.s3_keys(f"{out}/runs/1")

    await cluster.api.delete(RECONS.format(ns=cluster.ns) + "/site")
    await eventually(lambda: _gone(cluster), what="site and its Jobs deleted")
    # Created again with other options: status starts empty, storage still holds runs/1.
    await cluster.create_recon("site", spec_for(buckets, train={"iterations": 500}))
    status = await cluster.wait_status("site", lambda s: s.get("run") is not None, "a run")
    assert status["run"] == 2 and status["runUri"] == f"{out}/runs/2"
    job = await cluster.wait_job("site-r2-sfm")
    assert f"{out}/runs/2/sfm" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert cluster.s3_keys(f"{out}/runs/1") == before  # never reused, never overwritten


async def test_second_reconstruction_on_an_owned_output_fails_naming_the_owner(cluster: Cluster,
                                                                             buckets: tuple[str, str]) -> None:
    await cluster.create_recon("site", spec_for(buckets))
    await cluster.wait_job("site-r1-sfm")
    await cluster.create_recon("intruder", spec_for(buckets))  # same output.uri
    status = await cluster.wait_status("intruder", lambda s: s.get("phase") == "Failed", "Failed")
    assert status["reason"] == "OutputInUse"
    assert f"s3://{buckets[1]}/site belongs to Reconstruction default/site" in status["message"]
    assert [c["status"] for c in status["conditions"] if c["type"] == "Stalled"] == ["True"]
    await cluster.wait_events("intruder", {"OutputInUse"})
    assert sorted(j["metadata"]["name"] for j in await cluster.jobs()) == ["site-r1-sfm"]

    # The owner gone for good and its record deleted (docs/troubleshooting.md), a retry takes the prefix over.
    cluster.s3_put(f"s3://{buckets[1]}/site/runs/1/sfm/result.json", result("sfm", {}).to_json())
    await cluster.api.delete(RECONS.format(ns=cluster.ns) + "/site")
    await eventually(lambda: _gone(cluster), what="site and its Jobs deleted")
    cluster.s3.delete_object(Bucket=buckets[1], Key="site/owner.json")
    await annotate(cluster, "intruder", "owner-gone")
    status = await cluster.wait_status("intruder", lambda s: s.get("phase") == "Running", "Running")
    assert status["run"] == 2  # runs/1 holds site's files
    owner = json.loads(cluster.s3.get_object(Bucket=buckets[1], Key="site/owner.json")["Body"].read())
    assert owner["name"] == "intruder"

    # Pointed elsewhere, it runs (run 1 of its own prefix).
    await cluster.patch_spec("intruder", {"output": {"uri": f"s3://{buckets[1]}/elsewhere"}})
    await cluster.wait_job("intruder-r3-sfm")
    status = await cluster.wait_status("intruder", lambda s: s.get("phase") == "Running", "Running")
    assert status["runUri"] == f"s3://{buckets[1]}/elsewhere/runs/3"  # run numbers only grow


async def _gone(cluster: Cluster) -> bool:
    return await cluster.recon("site") is None and not await cluster.jobs()


def test_stage_jobs_carry_the_owner_and_the_output_root() -> None:
    from spaceport.api import ReconstructionSpec
    from spaceport.controller.jobs import Owner, build_job
    from spaceport.controller.settings import OperatorSettings

    spec = ReconstructionSpec.model_validate({"input": {"uri": "flights/a", "volumeClaim": "photos"},
                                              "output": {"uri": "recon/a", "volumeClaim": "results"}})
    job = build_job(Owner("a", "surveys", "u-9"), spec, 3, "train", OperatorSettings())
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SPACEPORT_OUTPUT_ROOT"] == "/mnt/spaceport/output/recon/a"
    assert json.loads(env["SPACEPORT_OWNER"]) == {"namespace": "surveys", "name": "a", "uid": "u-9"}

"""The Argo CD health check in charts/spaceport/README.md, run in Lua 5.1 (Argo CD's gopher-lua) via lupa."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from spaceport.api import FailureRecord, Phase, Reason, ReconstructionSpec, ReconstructionStatus
from spaceport.contract import StageResult
from spaceport.controller import observe as obs
from spaceport.controller import status as st
from tests.operator.harness import ROOT

README = ROOT / "charts" / "spaceport" / "README.md"
KEY = "resource.customizations.health.spaceport.dev_Reconstruction"
NOW = "2026-11-25T15:00:00Z"


def health_script() -> str:
    text = README.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text.split("### Argo CD health check", 1)[1], re.S)
    return yaml.safe_load(blocks[0])["data"][KEY]


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD would show for ``obj`` (a Reconstruction as the API server returns it)."""
    lupa = pytest.importorskip("lupa.lua51")
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    check = lua.eval("function(obj)\n" + health_script() + "\nend")
    result = check(lua.table_from(obj, recursive=True))
    return {k: result[k] for k in ("status", "message") if result[k] is not None}


SPEC = ReconstructionSpec.model_validate({"input": {"uri": "s3://photos/site"}, "output": {"uri": "s3://out/site"}})


def obj(status: ReconstructionStatus | None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "spaceport.dev/v1alpha1", "kind": "Reconstruction",
                            "metadata": {"name": "site", "namespace": "default", "generation": generation}}
    if status is not None:
        body["status"] = status.to_wire()
    return body


def running() -> ReconstructionStatus:
    started = st.start_run(ReconstructionStatus(), SPEC, "site", 1, NOW)
    job = obs.JobView(name="site-r1-sfm", suspended=False, active=1, succeeded=False, failed=False)
    return st.next_status(started, SPEC, obs.Observation("sfm", job), 1, NOW)


def test_each_phase_maps_to_an_argocd_health() -> None:
    assert argocd_health(obj(None)) == {"status": "Progressing", "message": "waiting for the operator"}
    assert argocd_health(obj(running()))["status"] == "Progressing"

    failed_job = obs.JobView(name="site-r1-sfm", suspended=False, active=0, succeeded=False, failed=True,
                            reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
    no_images = FailureRecord(stage="sfm", reason="BadInput", message="no images")
    failed = st.next_status(running(), SPEC, obs.Observation("sfm", failed_job, failure=no_images), 1, NOW)
    assert argocd_health(obj(failed)) == {"status": "Degraded",
                                          "message": "StageFailed: sfm failed: BadInput: no images"}

    done = running()
    for stage in ("sfm", "train", "compress"):
        result = StageResult(stage=stage, started_at=NOW, finished_at=NOW, duration_seconds=1.0)
        job = obs.JobView(name=f"site-r1-{stage}", suspended=False, active=0, succeeded=True, failed=False)
        done = st.next_status(done, SPEC, obs.Observation(stage, job, result=result), 1, NOW)
    assert done.phase == Phase.SUCCEEDED
    assert argocd_health(obj(done)) == {"status": "Healthy", "message": "all stages done"}
    # A spec change the operator has not answered yet: the old run's Healthy no longer speaks for it.
    assert argocd_health(obj(done, generation=2))["status"] == "Progressing"

    suspended = running().model_copy(update={"phase": Phase.SUSPENDED, "reason": Reason.SUSPENDED,
                                             "message": "sfm suspended"})
    assert argocd_health(obj(st.with_conditions(suspended, NOW))) == {"status": "Suspended",
                                                                      "message": "sfm suspended"}

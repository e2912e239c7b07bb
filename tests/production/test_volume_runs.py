"""Run numbers on volume outputs, which the operator cannot list: the stage Jobs can. A Reconstruction deleted and
created again with other options continues at the next free run instead of failing on (or reusing) the files of
its earlier life. The kubelet stand-in runs the real `spaceport stage` (owner check, runner, fingerprints,
termination message) around quick stand-ins for the stages' work (standin_stages.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.harness import RECONS, Cluster, eventually
from tests.production import standin_stages
from tests.production.kubelet import Kubelet
from tests.production.test_bad_inputs import files, pvc_spec

OUTPUT = "reconstructions/orbit"


@pytest.fixture
async def quick(cluster: Cluster, volumes: dict[str, Path]) -> AsyncIterator[Kubelet]:
    command = [sys.executable, standin_stages.__file__]
    async with Kubelet(cluster.api, cluster.ns, volumes, command=command) as k:
        yield k


async def finished(cluster: Cluster, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    await cluster.create_recon(name, spec)
    return await cluster.wait_status(name, lambda s: s.get("phase") in ("Succeeded", "Failed"), f"{name} done", 60)


async def gone(cluster: Cluster) -> bool:
    return await cluster.recon("orbit") is None and not await cluster.jobs()


@pytest.mark.parametrize(("changed", "stale"), [({"sfm": {"maxImageSize": 800}}, "sfm"),
                                                ({"train": {"iterations": 500}}, "train")],
                         ids=["sfm options", "train options"])
async def test_recreated_reconstruction_continues_at_the_next_free_run(
        cluster: Cluster, quick: Kubelet, volumes: dict[str, Path], changed: dict[str, Any], stale: str) -> None:
    photos = volumes["survey-photos"] / "flights" / "orbit"
    photos.mkdir(parents=True)
    (photos / "IMG_0001.jpg").write_bytes(b"\xff\xd8 not decoded by the stand-ins")
    output = volumes["survey-results"] / OUTPUT
    first = await finished(cluster, "orbit", pvc_spec())
    assert (first["phase"], first["run"]) == ("Succeeded", 1), first["message"]
    run1 = files(output / "runs" / "1")
    assert len(run1) == 12  # attempt, progress, result and made.json of each stage

    await cluster.api.delete(RECONS.format(ns=cluster.ns) + "/orbit")
    await eventually(lambda: gone(cluster), what="orbit and its Jobs deleted")
    # Created again with other options: status starts empty, the volume still holds runs/1.
    status = await finished(cluster, "orbit", pvc_spec(**changed))

    assert (status["phase"], status["run"], status["runUri"]) == ("Succeeded", 2, f"{OUTPUT}/runs/2"), status
    assert files(output / "runs" / "1") == run1  # never reused, never overwritten
    assert sorted(status["outputs"]) == ["compress", "sfm", "train"]
    assert all(uri.endswith(f"{OUTPUT}/runs/2/{s}/made.json") for s, uri in status["outputs"].items()), status
    section, options = next(iter(changed.items()))
    made = json.loads((output / "runs" / "2" / section / standin_stages.MADE).read_text())
    assert made.items() >= options.items()
    assert quick.attempts[f"orbit-r1-{stale}"] and quick.attempts["orbit-r2-sfm"]
    assert {j["metadata"]["name"] for j in await cluster.jobs()} == {f"orbit-r2-{s}" for s in ("sfm", "train",
                                                                                                  "compress")}
    events = await cluster.wait_events("orbit", {"RunStarted"})
    assert (f"run 2 writes to {OUTPUT}/runs/2; {OUTPUT}/runs/1 holds {stale} files made from other inputs, kept as "
            "they are") in {e["message"] for e in events}
    owner = json.loads((output / "owner.json").read_text())
    assert (owner["namespace"], owner["name"]) == ("default", "orbit")

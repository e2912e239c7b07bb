"""The emulator's API-server semantics that the operator tests rely on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.harness import RECONS, running_cluster

SPEC = {"input": {"uri": "s3://photos/a"}, "output": {"uri": "s3://results/a"}}


async def test_api_server_semantics(s3: Any, moto_url: str) -> None:
    async with running_cluster(s3, moto_url, operator=False) as cluster:
        api, url = cluster.api, RECONS.format(ns="default")
        created = await cluster.create_recon("a", {**SPEC, "suspend": False})
        meta = created["metadata"]
        assert meta["namespace"] == "default" and meta["generation"] == 1 and meta["uid"]
        assert meta["resourceVersion"] and meta["creationTimestamp"]
        with pytest.raises(AssertionError, match="409"):
            await cluster.create_recon("a", SPEC)

        status = await api.patch(f"{url}/a/status", {"status": {"phase": "Running"}, "spec": {"suspend": True}})
        assert status["spec"]["suspend"] is False and status["metadata"]["generation"] == 1  # spec untouched
        spec = await api.patch(f"{url}/a", {"spec": {"suspend": True}, "status": {"phase": "Failed"}})
        assert spec["status"]["phase"] == "Running" and spec["metadata"]["generation"] == 2  # status untouched
        with pytest.raises(AssertionError, match="409"):
            await api.patch(f"{url}/a", {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": {}})

        await api.patch(f"{url}/a", {"spec": {"madeUp": 1}})
        assert "madeUp" not in (await cluster.recon("a"))["spec"]  # pruned: not in the CRD schema
        assert cluster.pruned() == ["Reconstruction/a: .spec.madeUp"]
        with pytest.raises(AssertionError, match=r"422.*madeUp: field not declared"):
            await api.request("PATCH", f"{url}/a?fieldValidation=Strict", {"spec": {"madeUp": 1}},
                              "application/merge-patch+json")

        await api.create("/apis/batch/v1/namespaces/default/jobs", {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "labels": {"x": "1"}}, "spec": {}})
        jobs = "/apis/batch/v1/namespaces/default/jobs"
        assert len((await api.get(f"{jobs}?labelSelector=x=1"))["items"]) == 1
        assert (await api.get(f"{jobs}?labelSelector=x=2"))["items"] == []
        namespaces = await api.get("/api/v1/namespaces")
        assert {n["metadata"]["name"] for n in namespaces["items"]} >= {"default"}
        assert (await api.get("/api/v1"))["groupVersion"] == "v1"

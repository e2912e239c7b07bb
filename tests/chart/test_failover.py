"""High availability as the chart deploys it, against the emulated API server (tests/operator/emulator.py).

The replicas run with the chart's own arguments (`--priority` from the StatefulSet ordinal, `--peering`,
the namespaces) and register in the chart's peering object (cluster-wide or namespaced), created from the
chart's CRDs. Only the top-priority replica creates Jobs; when it leaves or dies, the stand-by carries the
same Reconstruction on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import boto3
import kopf
import pytest

from spaceport.cli import build_parser
from spaceport.contract import StageResult
from spaceport.controller.k8s import Kube
from spaceport.controller.main import build_registry
from spaceport.controller.settings import OperatorSettings
from tests.chart.chartlib import crd_documents, operator_container, render
from tests.operator.harness import Cluster, EmulatorThread, eventually
from tests.s3 import S3_ENV, moto_s3

PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"


class RecordingKube(Kube):
    """The real client, remembering which Jobs this replica created (to tell the replicas apart)."""

    created: list[str]

    def create_job(self, job: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        body, created = super().create_job(job)
        if created:  # not an adoption (409) of a Job another replica made
            self.created.append(job["metadata"]["name"])
        return body, created


@pytest.fixture(autouse=True)
def no_handler_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No handler of any replica fails, stopping ones included (kopf's timers fire on during its shutdown,
    after the pass pool has closed: each tick used to log a traceback)."""
    yield
    records = caplog.get_records("call")
    failed = [r.getMessage() for r in records if r.name == "kopf.objects" and r.levelno >= logging.ERROR]
    assert failed == []


def chart_replica_args(values: dict[str, Any] | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Each replica's parsed command line, as the StatefulSet gives it, and the peering object."""
    docs = render({"operator": {"replicas": 2}, **(values or {})})
    args = operator_container(docs)["args"]
    parsed = [build_parser().parse_args([a.replace("$(SPACEPORT_POD_INDEX)", str(i)) for a in args])
              for i in range(2)]
    [peering] = [d for d in docs if d["apiVersion"] == "kopf.dev/v1"]
    return parsed, peering


def peering_path(peering: dict[str, Any]) -> str:
    namespace = peering["metadata"].get("namespace")
    return f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings" if namespace else PEERINGS


class Replica:
    """One operator replica on its own thread and event loop, as a separate Pod would be (kopf cancels
    every task of its loop when it stops, so replicas sharing a loop would take each other down)."""

    def __init__(self, url: str, args: Any) -> None:
        self.kube = RecordingKube.for_url(url)
        self.kube.created = []
        self.stop = threading.Event()

        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url, insecure=True, default_namespace="default")

        settings = kopf.OperatorSettings()
        settings.watching.reconnect_backoff = 0.05
        settings.scanning.disabled = True
        registry = build_registry(self.kube, OperatorSettings(progress_interval_s=0.2, max_workers=4), login=login)
        self.thread = threading.Thread(target=lambda: asyncio.run(kopf.operator(
            registry=registry, settings=settings, clusterwide=args.all_namespaces, namespaces=args.namespace,
            standalone=args.standalone, priority=args.priority, peering_name=args.peering, stop_flag=self.stop)),
            daemon=True)
        self.thread.start()

    async def exit(self) -> None:
        """A clean exit (SIGTERM): kopf removes this replica from the peering on the way out."""
        self.stop.set()
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive(), "the replica did not stop"


@contextlib.asynccontextmanager
async def emulated_cluster() -> AsyncIterator[tuple[Cluster, dict[str, Any]]]:
    with moto_s3() as s3_url:
        s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
        suffix = uuid.uuid4().hex[:8]
        spec = {"input": {"uri": f"s3://photos-{suffix}/site", "credentialsSecret": "s3-creds"},
                "output": {"uri": f"s3://results-{suffix}/site", "credentialsSecret": "s3-creds"}}
        for uri in (spec["input"]["uri"], spec["output"]["uri"]):
            s3.create_bucket(Bucket=uri.split("/")[2])
        # The chart's CRDs: Reconstruction and kopf's peerings.
        with EmulatorThread(crd_documents()) as emulator:
            async with aiohttp.ClientSession(emulator.url) as session:
                cluster = Cluster(emulator.url, session, s3, s3_url)
                await cluster.create_secret("s3-creds", {**S3_ENV, "AWS_ENDPOINT_URL": s3_url})
                yield cluster, spec


def _result(stage: str) -> StageResult:
    return StageResult(stage=stage, started_at="2026-11-25T15:00:00Z", finished_at="2026-11-25T15:05:00Z",
                       duration_seconds=300.0, metrics={}, outputs={})


async def _created_by(replica: Replica) -> list[str]:
    """The Jobs ``replica`` created, once it has them: the emulator stores a Job (and the test can read it)
    before its reply reaches the replica's thread, which is when the replica learns it created it."""
    return await eventually(lambda: asyncio.sleep(0, list(replica.kube.created)), 5.0, "the creating replica's reply")


async def _peers(cluster: Cluster, peering: dict[str, Any]) -> dict[str, Any]:
    body = await cluster.api.get(f"{peering_path(peering)}/{peering['metadata']['name']}")
    return (body or {}).get("status") or {}


@pytest.mark.parametrize("values", [{}, {"rbac": {"clusterWide": False, "watchNamespaces": ["default"]}}],
                         ids=["cluster-wide", "namespaced"])
@pytest.mark.timeout(90)
async def test_standby_takes_over_when_the_leader_exits(values: dict[str, Any]) -> None:
    (pod0, pod1), peering = chart_replica_args(values)
    assert pod0.priority > pod1.priority and pod0.peering == pod1.peering == peering["metadata"]["name"]
    async with emulated_cluster() as (cluster, spec):
        await cluster.api.create(peering_path(peering), peering)
        leader = Replica(cluster.url, pod0)
        standby = Replica(cluster.url, pod1)
        try:
            async def both_registered() -> bool:
                return len(await _peers(cluster, peering)) == 2

            await _wait(both_registered, "both replicas in the peering")
            await cluster.create_recon("site", spec)
            await cluster.wait_job("site-r1-sfm")
            assert await _created_by(leader) == ["site-r1-sfm"] and standby.kube.created == []

            await leader.exit()
            assert len(await _peers(cluster, peering)) == 1, "a clean exit leaves the peering at once"
            run = spec["output"]["uri"] + "/runs/1"
            await cluster.succeed_job("site-r1-sfm", f"{run}/sfm", _result("sfm"))
            await cluster.wait_job("site-r1-train", timeout=20)
            assert await _created_by(standby) == ["site-r1-train"]
            assert [j["metadata"]["name"] for j in await cluster.jobs()] == ["site-r1-sfm", "site-r1-train"]
        finally:
            await leader.exit()
            await standby.exit()


@pytest.mark.timeout(90)
async def test_standby_waits_out_a_crashed_leaders_record_then_takes_over() -> None:
    (pod0, pod1), peering = chart_replica_args()
    lifetime = 3
    async with emulated_cluster() as (cluster, spec):
        # What a SIGKILLed pod-0 leaves behind: its last keep-alive, never withdrawn.
        now = dt.datetime.now(dt.UTC)
        record = {"priority": pod0.priority, "lifetime": lifetime, "lastseen": now.isoformat()}
        await cluster.api.create(PEERINGS, {**peering, "status": {"crashed-pod-0": record}})
        crashed_until = time.monotonic() + lifetime
        await cluster.create_recon("site", spec)
        standby = Replica(cluster.url, pod1)
        try:
            await cluster.wait_job("site-r1-sfm", timeout=lifetime + 15)
            assert time.monotonic() >= crashed_until - 0.5, "the stand-by acted while the leader looked alive"
            assert await _created_by(standby) == ["site-r1-sfm"]
        finally:
            await standby.exit()


@pytest.mark.timeout(60)
async def test_equal_priorities_freeze_every_replica() -> None:
    # Why the chart gives each replica its own priority: two replicas sharing one (a Deployment's
    # replicas would) both pause, and nothing is ever reconciled.
    (pod0, _), peering = chart_replica_args()
    async with emulated_cluster() as (cluster, spec):
        await cluster.api.create(PEERINGS, peering)
        twins = [Replica(cluster.url, pod0), Replica(cluster.url, pod0)]
        try:
            async def both_registered() -> bool:
                return len(await _peers(cluster, peering)) == 2

            await _wait(both_registered, "both replicas in the peering")
            await cluster.create_recon("site", spec)
            with pytest.raises(AssertionError, match="timed out"):
                await cluster.wait_job("site-r1-sfm", timeout=3)
            assert all(t.kube.created == [] for t in twins)
        finally:
            for twin in twins:
                await twin.exit()


async def _wait(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)

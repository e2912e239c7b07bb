"""What the operator remembers of its own writes (echoes, current bodies), and status writes conditional on
the version a pass read."""

from __future__ import annotations

from collections import Counter
from typing import Any

import aiohttp.web

from spaceport.controller.k8s import MERGE_PATCH, Kube
from spaceport.controller.reconcile import Reconciler
from spaceport.controller.settings import OperatorSettings
from spaceport.controller.written import Written
from tests.operator.emulator import ClusterEmulator, parse_route
from tests.operator.harness import EmulatorThread, load_crds


def body(rv: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": rv}, "status": status or {}}


def test_echoes_are_the_versions_we_wrote() -> None:
    written = Written()
    written.status("ns", "a", body("5", {"phase": "Pending"}))
    written.status("ns", "a", body("8", {"phase": "Running"}))
    assert written.is_echo("ns", "a", "5") and written.is_echo("ns", "a", "8")  # both writes of one pass
    assert not written.is_echo("ns", "a", "6") and not written.is_echo("ns", "b", "5")
    assert not written.is_echo("ns", "a", None)


def test_a_job_we_created_is_an_echo_once() -> None:
    written = Written()
    job = {"metadata": {"name": "a-r1-sfm", "resourceVersion": "7"}}
    written.job("ns", "a", job)
    assert not written.is_job_echo("ns", "a", {"metadata": {"name": "a-r1-sfm", "resourceVersion": "9"}})
    assert written.is_job_echo("ns", "a", job)
    assert not written.is_job_echo("ns", "a", job)  # a re-list of the same version after that is looked at


def test_a_body_is_current_when_it_carries_the_last_status_known() -> None:
    written = Written()
    assert written.is_current("ns", "a", body("3", {"phase": "Pending"}))  # nothing known: as good as a GET
    written.status("ns", "a", body("5", {"phase": "Running"}))
    assert not written.is_current("ns", "a", body("4", {"phase": "Pending"}))  # taken before our write
    assert written.is_current("ns", "a", body("9", {"phase": "Running", "kopf": {"x": 1}}))  # e.g. kopf's finalizer
    written.seen("ns", "a", body("12", {"phase": "Failed"}))  # read back: another writer moved it
    assert written.is_current("ns", "a", body("13", {"phase": "Failed"}))
    assert not written.is_current("ns", "a", body("9", {"phase": "Running"}))


def test_only_a_running_reconstructions_body_is_kept() -> None:
    written = Written()
    written.status("ns", "a", body("5", {"phase": "Running"}))
    assert written.body("ns", "a") == body("5", {"phase": "Running"})
    written.status("ns", "a", body("6", {"phase": "Succeeded"}))
    assert written.body("ns", "a") is None and written.is_echo("ns", "a", "6")
    written.forget("ns", "a")
    assert not written.is_echo("ns", "a", "6") and written.is_current("ns", "a", body("1", {"phase": "Pending"}))


class CountingEmulator(ClusterEmulator):
    """Records (method, resource, answer code) of every object request."""

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        response = await super().__call__(raw)
        route = parse_route(raw.path)
        if route is not None:
            seen: Counter[tuple[str, str, int]] = self.__dict__.setdefault("seen", Counter())
            seen[(raw.method, route.plural + (f"/{route.sub}" if route.sub else ""), response.status)] += 1
        return response


class CountingEmulatorThread(EmulatorThread):
    emulator_class = CountingEmulator


def test_a_pass_on_an_outdated_body_reads_again_instead_of_writing() -> None:
    with CountingEmulatorThread(load_crds()) as emulator:
        kube = Kube.for_url(emulator.url)
        reconciler = Reconciler(kube, OperatorSettings())
        kube.custom.create_namespaced_custom_object("spaceport.dev", "v1alpha1", "default", "reconstructions", {
            "apiVersion": "spaceport.dev/v1alpha1", "kind": "Reconstruction", "metadata": {"name": "a"},
            "spec": {"input": {"uri": "photos/a", "volumeClaim": "photos"},
                     "output": {"uri": "results/a", "volumeClaim": "results"}}})
        reconciler.reconcile("default", "a")
        kube.custom.patch_namespaced_custom_object("spaceport.dev", "v1alpha1", "default", "reconstructions", "a",
                                                   {"metadata": {"labels": {"team": "survey"}}})
        outdated = kube.get_reconstruction("default", "a")  # current by the rules: it carries our last write
        assert outdated is not None and outdated["status"]["phase"] == "Running"
        assert reconciler.written.is_current("default", "a", outdated)

        kube.patch_reconstruction_status("default", "a", {"message": "moved on by another writer"})
        kube.batch.patch_namespaced_job_status("a-r1-sfm", "default", {"status": {
            "succeeded": 1, "completionTime": "2026-11-25T15:05:00Z",
            "conditions": [{"type": "Complete", "status": "True"}]}}, _content_type=MERGE_PATCH)
        seen: Counter[tuple[str, str, int]] = emulator.emu.__dict__["seen"]  # type: ignore[union-attr]
        before = Counter(seen)
        status = reconciler.reconcile("default", "a", body=outdated)

        calls = Counter(seen)
        calls.subtract(before)
        assert calls[("PATCH", "reconstructions/status", 409)] == 1  # written onto the version read: refused
        assert calls[("GET", "reconstructions", 200)] >= 1  # read again, and the pass ran on that
        assert calls[("PATCH", "reconstructions/status", 200)] == 1
        stored = kube.get_reconstruction("default", "a")
        assert stored is not None and status is not None
        assert stored["status"]["stages"]["sfm"]["phase"] == "Succeeded" and stored["status"]["stage"] == "train"
        assert kube.get_job("default", "a-r1-train") is not None

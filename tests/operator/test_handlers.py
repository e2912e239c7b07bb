"""The kopf wiring: what kopf is asked to do for the operator's handlers."""

from __future__ import annotations

from spaceport.controller.k8s import Kube
from spaceport.controller.main import build_registry
from spaceport.controller.settings import OperatorSettings


def test_no_change_handlers_so_kopf_needs_no_diff_base() -> None:
    # handlers.NoDiffBaseStorage stores no last-handled state: a change handler (kopf.on.create, update,
    # delete, resume, field) would never fire. React to events (kopf.on.event) instead, or restore kopf's
    # AnnotationsDiffBaseStorage along with such a handler.
    registry = build_registry(Kube.for_url("http://127.0.0.1:9"), OperatorSettings())
    assert not registry._changing.get_all_handlers()
    assert registry._watching.get_all_handlers() and registry._spawning.get_all_handlers()  # the scan works

"""kopf wiring only: which events call which reconciler method. No logic lives here.

Handlers are synchronous (the Kubernetes client is), so kopf runs them in its thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from spaceport.api import GROUP, PLURAL, VERSION
from spaceport.controller.naming import LABEL_RECON
from spaceport.controller.reconcile import Reconciler, RetryLater
from spaceport.controller.settings import OperatorSettings
from spaceport.controller.status import TERMINAL

LoginFn = Callable[..., Any]
log = logging.getLogger("spaceport.operator")


def _active(status: dict[str, Any], meta: dict[str, Any], **_: Any) -> bool:
    """Worth a look: not deleted, and not a finished run of the current generation (no polling of those)."""
    if meta.get("deletionTimestamp"):
        return False
    return not (status.get("phase") in TERMINAL and status.get("observedGeneration") == meta.get("generation"))


def _s3_output(spec: dict[str, Any], **_: Any) -> bool:
    return str((spec.get("output") or {}).get("uri", "")).startswith("s3://")


def _polled_fast(status: dict[str, Any], meta: dict[str, Any], spec: dict[str, Any], **_: Any) -> bool:
    """Runs whose stages write progress.json where the operator can read it (S3)."""
    return _active(status=status, meta=meta) and _s3_output(spec)


def _polled_slowly(status: dict[str, Any], meta: dict[str, Any], spec: dict[str, Any], **_: Any) -> bool:
    """Runs on volumes: no progress to read, Job events bring every change; the poll is only a safety net."""
    return _active(status=status, meta=meta) and not _s3_output(spec)


def _plain(body: kopf.Body) -> dict[str, Any]:
    """kopf's read-only view as the plain dict the reconciler works with (the view reads through to it)."""
    return dict(body)


def _owner_name(body: dict[str, Any]) -> str | None:
    for ref in body["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Reconstruction" and ref.get("apiVersion", "").startswith(f"{GROUP}/"):
            return str(ref["name"])
    return (body["metadata"].get("annotations") or {}).get("spaceport.dev/reconstruction-name")


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """No diff base: nothing here reacts to changes (kopf.on.create/update/delete/resume/field), only to events
    and timers, and kopf reads the last-handled state for change handlers alone. Its default storage still built
    that state on every watch event by deep-copying the whole object, status included: ~10% of the operator's
    CPU under load (bench/operator_load.py). tests/operator/test_handlers.py fails if a change handler appears."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, settings: OperatorSettings,
             login: LoginFn | None = None) -> None:
    """Declare every handler on ``registry`` (a fresh one per operator, so tests can run several)."""

    if login is not None:
        kopf.on.login(registry=registry)(login)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="spaceport.dev")
        settings.persistence.diffbase_storage = NoDiffBaseStorage()
        settings.persistence.finalizer = "spaceport.dev/cleanup"
        settings.posting.level = 30  # WARNING: handler chatter stays in logs, not in Events
        settings.execution.max_workers = reconciler.settings.max_workers
        # Watches end and restart every 10 min: a connection that died silently cannot stall the operator.
        settings.watching.server_timeout = settings.watching.server_timeout or 600
        settings.watching.client_timeout = settings.watching.client_timeout or 660
        settings.watching.connect_timeout = settings.watching.connect_timeout or 30
        # Only our Jobs: filtered by the API server, not after streaming every Job of the cluster.
        settings.watching.label_selectors["batch", "jobs"] = LABEL_RECON

    def reconcile(namespace: str, name: str, body: dict[str, Any] | None = None,
                  job: dict[str, Any] | None = None) -> None:
        try:
            reconciler.reconcile(namespace, name, body=body, job=job)
        except RetryLater as e:
            raise kopf.TemporaryError(str(e), delay=1) from e

    # Deletion needs no handler of its own (kopf.on.delete would add a change handler, whose bookkeeping
    # annotation cost one more PATCH and one more pass per object under load): the Jobs carry ownerReferences
    # for Kubernetes' garbage collector, and the DELETED event below removes them too.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def reconstruction_changed(type: str, namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
        if type == "DELETED":
            count = reconciler.cleanup(namespace, name, body["metadata"].get("uid"))
            log.info("%s/%s deleted: deleted %d Job(s); outputs are kept", namespace, name, count)
        elif reconciler.is_echo(namespace, name, body["metadata"].get("resourceVersion")):
            return
        elif _active(status=dict(body.get("status") or {}), meta=dict(body["metadata"])):
            reconcile(namespace, name, body=_plain(body))
        else:  # finished: only a webhook may still be owed (e.g. the operator restarted before sending it)
            reconciler.notify_if_due(dict(body))

    # backoff: after an error the next look comes as soon as a regular one would (kopf's default is 60 s).
    # initial_delay: a new object's first pass is the event handler's; a timer firing at once would repeat it.
    interval = settings.progress_interval_s

    @kopf.timer(GROUP, VERSION, PLURAL, id="poll", interval=interval, backoff=interval, initial_delay=interval,
                when=_polled_fast, registry=registry)
    def reconstruction_poll(namespace: str, name: str, **_: Any) -> None:
        reconcile(namespace, name)

    # Measured (bench/operator_load.py): polling 500 runs every 5 s cost more CPU than everything else together.
    @kopf.timer(GROUP, VERSION, PLURAL, id="safety-poll", interval=6 * interval, backoff=interval,
                initial_delay=6 * interval, when=_polled_slowly, registry=registry)
    def reconstruction_safety_poll(namespace: str, name: str, **_: Any) -> None:
        reconcile(namespace, name)

    # Every change of our Jobs (started, admitted by Kueue, finished, deleted) starts a pass at once.
    # The ADDED event of a Job this replica just created is skipped: the pass that created it saw it.
    @kopf.on.event("batch", "v1", "jobs", labels={LABEL_RECON: kopf.PRESENT}, registry=registry)
    def job_changed(type: str, body: kopf.Body, namespace: str, **_: Any) -> None:
        job = _plain(body)
        owner = _owner_name(job)
        if owner:
            reconcile(namespace, owner, job=None if type == "DELETED" else job)

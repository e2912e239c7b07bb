"""kopf wiring only: which events call which reconciler method. No logic lives here.

Handlers are async and decide on kopf's event loop what needs a pass: echoes of our own writes, a new
object's first event (see FINALIZER) and finished objects need none. Only passes, which block on the
synchronous Kubernetes client, go to a thread pool. (As sync handlers, every event waited in kopf's pool
behind the passes ahead of it, even to be dropped: under 500 new Reconstructions a first event waited 7 s.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from spaceport.api import GROUP, PLURAL, VERSION
from spaceport.controller.act import RetryLater
from spaceport.controller.naming import LABEL_RECON, RETRY_ANNOTATION
from spaceport.controller.reconcile import Reconciler
from spaceport.controller.settings import OperatorSettings
from spaceport.controller.status import TERMINAL

LoginFn = Callable[..., Any]
FINALIZER = "spaceport.dev/cleanup"
"""kopf's finalizer: it stops the timers of an object before the object goes."""
log = logging.getLogger("spaceport.operator")


def _active(status: dict[str, Any], meta: dict[str, Any], **_: Any) -> bool:
    """Worth a look: not deleted, and not a finished run of the current generation (no polling of those) unless
    a retry was asked for."""
    if meta.get("deletionTimestamp"):
        return False
    retry = (meta.get("annotations") or {}).get(RETRY_ANNOTATION)
    if retry is not None and retry != status.get("retry"):
        return True
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


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf's settings for this operator (at startup)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="spaceport.dev")
    settings.persistence.diffbase_storage = NoDiffBaseStorage()
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = 30  # WARNING: handler chatter stays in logs, not in Events
    # Watches end and restart every 10 min: a connection that died silently cannot stall the operator.
    settings.watching.server_timeout = settings.watching.server_timeout or 600
    settings.watching.client_timeout = settings.watching.client_timeout or 660
    settings.watching.connect_timeout = settings.watching.connect_timeout or 30
    # Only our Jobs: filtered by the API server, not after streaming every Job of the cluster.
    settings.watching.label_selectors["batch", "jobs"] = LABEL_RECON


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, settings: OperatorSettings,
             login: LoginFn | None = None) -> None:
    """Declare every handler on ``registry`` (a fresh one per operator, so tests can run several)."""

    if login is not None:
        kopf.on.login(registry=registry)(login)

    kopf.on.startup(registry=registry)(configure)

    passes = ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="spaceport-pass")

    stopping = threading.Event()

    @kopf.on.cleanup(registry=registry)
    async def stop_passes(**_: Any) -> None:
        stopping.set()
        passes.shutdown(wait=False, cancel_futures=True)

    async def in_pool(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` on a pass thread; None once the operator is stopping (kopf's timers still fire during its
        shutdown, and a pass begun then would fail on the closed pool; the next replica or start redoes it)."""
        if stopping.is_set():
            log.debug("operator stopping: %s skipped", getattr(fn, "__name__", fn))
            return None
        return await asyncio.get_running_loop().run_in_executor(passes, functools.partial(fn, *args, **kwargs))

    async def reconcile(namespace: str, name: str, body: dict[str, Any] | None = None,
                        job: dict[str, Any] | None = None, fresh: bool = False) -> None:
        try:
            await in_pool(reconciler.reconcile, namespace, name, body=body, job=job, fresh=fresh)
        except RetryLater as e:
            raise kopf.TemporaryError(str(e), delay=1) from e

    # Deletion needs no handler of its own (kopf.on.delete would add a change handler, whose bookkeeping
    # annotation cost one more PATCH and one more pass per object under load): the Jobs carry ownerReferences
    # for Kubernetes' garbage collector, and the DELETED event below removes them too.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def reconstruction_changed(type: str, namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
        if type == "DELETED":
            count = await in_pool(reconciler.cleanup, namespace, name, body["metadata"].get("uid"))
            if count is None:  # stopping: the garbage collector deletes the Jobs by their ownerReferences
                return
            log.info("%s/%s deleted: deleted %d Job(s); outputs are kept", namespace, name, count)
        elif reconciler.is_echo(namespace, name, body=_plain(body)):
            return
        elif _active(status=dict(body.get("status") or {}), meta=dict(body["metadata"])):
            if type == "ADDED" and FINALIZER not in (body["metadata"].get("finalizers") or []):
                # kopf adds its finalizer (its timers need one) when this cycle ends, conditional on this
                # version: a status write now made that PATCH fail and retry on the next events (2.4 PATCHes
                # per object under load, not 1). The finalizer's own event, a moment later, starts the pass
                # (and should that PATCH never land, any later event or kopf's re-list every 10 min does).
                return
            await reconcile(namespace, name, body=_plain(body))
        else:  # finished: only a webhook may still be owed (e.g. the operator restarted before sending it)
            reconciler.notify_if_due(dict(body))  # in memory; the POST has its own thread

    # backoff: after an error the next look comes as soon as a regular one would (kopf's default is 60 s).
    # initial_delay: a new object's first pass is the event handler's; a timer firing at once would repeat it.
    interval = settings.progress_interval_s

    @kopf.timer(GROUP, VERSION, PLURAL, id="poll", interval=interval, backoff=interval, initial_delay=interval,
                when=_polled_fast, registry=registry)
    async def reconstruction_poll(namespace: str, name: str, **_: Any) -> None:
        await reconcile(namespace, name, fresh=True)

    # Measured (bench/operator_load.py): polling 500 runs every 5 s cost more CPU than everything else together.
    @kopf.timer(GROUP, VERSION, PLURAL, id="safety-poll", interval=6 * interval, backoff=interval,
                initial_delay=6 * interval, when=_polled_slowly, registry=registry)
    async def reconstruction_safety_poll(namespace: str, name: str, **_: Any) -> None:
        await reconcile(namespace, name, fresh=True)

    # Every change of our Jobs (started, admitted by Kueue, finished, deleted) starts a pass at once.
    # The ADDED event of a Job this replica just created is skipped: the pass that created it saw it.
    @kopf.on.event("batch", "v1", "jobs", labels={LABEL_RECON: kopf.PRESENT}, registry=registry)
    async def job_changed(type: str, body: kopf.Body, namespace: str, **_: Any) -> None:
        job = _plain(body)
        owner = _owner_name(job)
        if owner and (type == "DELETED" or not reconciler.is_echo(namespace, owner, job=job)):
            await reconcile(namespace, owner, job=None if type == "DELETED" else job)

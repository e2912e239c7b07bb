"""One reconcile pass: observe (observe.py), decide (decide.py, pure), act (act.py), status written once at the end.

Passes for the same Reconstruction never overlap (one lock per object), whichever handler started them; the
notifier's status writes take the same lock.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from spaceport.api import (
    STAGES,
    Phase,
    ReconstructionSpec,
    ReconstructionStatus,
    describe_validation_error,
)
from spaceport.controller import decide, metrics
from spaceport.controller import status as st
from spaceport.controller.act import Actor, OutputTaken, RetryLater
from spaceport.controller.decide import Decision
from spaceport.controller.events import EventPoster
from spaceport.controller.jobs import Owner
from spaceport.controller.k8s import ConflictError, Kube
from spaceport.controller.naming import RETRY_ANNOTATION
from spaceport.controller.notify import Notifier
from spaceport.controller.observe import Observer
from spaceport.controller.progress import StorageReader
from spaceport.controller.settings import OperatorSettings
from spaceport.controller.written import Written

log = logging.getLogger("spaceport.operator")

__all__ = ["Reconciler", "RetryLater"]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings, storage: StorageReader | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.storage = storage or StorageReader(kube, settings.secret_cache_s, settings.default_credentials_secret)
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self.written = Written()
        self.notifier = Notifier(kube, self._record_notification, settings.notify_attempts,
                                 settings.notify_backoff_s)
        self.observer = Observer(kube, settings, self.storage)
        self.actor = Actor(kube, settings, self.storage, self.written, self.notifier, EventPoster(kube))
        self.prices = decide.Prices(settings.price_cpu_hour, settings.price_gpu_hour, settings.price_currency)

    def notify_if_due(self, body: dict[str, Any]) -> None:
        """Queue spec.notify's POST for a finished run not yet notified (also after a restart)."""
        try:
            spec = ReconstructionSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return
        status = ReconstructionStatus.model_validate(body.get("status") or {})
        meta = body["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))
        self.actor.perform(owner, spec, status.run or 0, decide.notifications(spec, status))

    def is_echo(self, namespace: str, name: str, body: dict[str, Any] | None = None,
                job: dict[str, Any] | None = None) -> bool:
        """True for the watch event of one of our own writes (a status write, a Job as we created it): it holds
        nothing new to act on. Handlers ask before a pass is queued; the pass asks again under the lock (the
        write it races with is noted before the lock is released)."""
        return self.written.is_echo_event(namespace, name, body, job)

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

    def _record_notification(self, namespace: str, name: str, record: dict[str, Any]) -> None:
        with self._lock(namespace, name):
            self.actor.record_notification(namespace, name, record)

    def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None,
                  job: dict[str, Any] | None = None, fresh: bool = False) -> ReconstructionStatus | None:
        """One pass. ``body``: the Reconstruction as a watch event just delivered it, used instead of a GET when
        it is current (``Written.is_current``); without one, the last current body known. ``job``: one of its
        Jobs as an event delivered it, used instead of a GET when it is the Job the pass looks at. ``fresh``:
        read the Reconstruction whatever is known (the timers' passes: the safety net for missed events)."""
        outcome = "error"
        with self._lock(namespace, name), metrics.RECONCILE_SECONDS.time():
            try:
                # Checked under the lock: the pass that wrote or created holds it until it has noted what it did.
                if self.is_echo(namespace, name, body, job):
                    outcome = "echo"
                    return None
                if body is None and not fresh:
                    body = self.written.body(namespace, name)
                if body is None or not self.written.is_current(namespace, name, body):
                    body = self._read(namespace, name)
                else:
                    self.written.seen(namespace, name, body)
                for attempt in (1, 2):
                    if body is None:
                        self.actor.delete_jobs(namespace, name, keep_run=None)  # orphans: no garbage collector here
                        outcome = "gone"
                        return None
                    if body["metadata"].get("deletionTimestamp"):
                        outcome = "deleting"
                        return None
                    try:
                        status = self._reconcile(body, job)
                        break
                    except ConflictError:  # changed since that body: once more on a fresh one
                        if attempt == 2:
                            raise RetryLater(f"{namespace}/{name} keeps changing") from None
                        body, job = self._read(namespace, name), None
                outcome = "ok"
                return status
            except RetryLater:
                outcome = "retry"
                raise
            finally:
                metrics.RECONCILES.labels(outcome).inc()

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        body = self.kube.get_reconstruction(namespace, name)
        if body is not None:
            self.written.seen(namespace, name, body)
        return body

    def _reconcile(self, body: dict[str, Any], job_seen: dict[str, Any] | None = None) -> ReconstructionStatus:
        meta = body["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
        owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
        pass_ = _Pass(self, owner, body)
        try:
            spec = ReconstructionSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            return pass_.act(None, decide.invalid(pass_.old, describe_validation_error(e, "spec"), generation,
                                                  now_iso()))
        retry = (meta.get("annotations") or {}).get(RETRY_ANNOTATION)
        done = decide.settled(pass_.old, spec, retry, generation)
        if done is not None:
            return pass_.act(spec, done)
        asked = decide.retry(pass_.old, spec, name, retry, generation, now_iso())
        if asked is not None:
            pass_.act(spec, asked)
        if decide.needs_run(pass_.status, spec):
            started = decide.start(pass_.status, spec, namespace, name, generation, now_iso(),
                                   self.observer.output(namespace, spec))
            try:
                pass_.act(spec, started)
            except OutputTaken as e:  # claimed by another Reconstruction since its owner record was read
                return pass_.act(spec, decide.output_in_use(pass_.status, str(e), generation, now_iso()))
            if started.final:
                return pass_.status
        # A generation that changes nothing the run depends on (suspend, retries) still counts as seen.
        pass_.status = pass_.status.model_copy(update={"observed_generation": generation})
        self._stages(pass_, spec, generation, job_seen)
        return pass_.act(spec, decide.finish(pass_.status, spec, self.prices, now_iso()))

    def _stages(self, pass_: _Pass, spec: ReconstructionSpec, generation: int | None,
                job_seen: dict[str, Any] | None) -> None:
        """Each stage in turn while they finish: a finished stage starts the next one in the same pass. A Job
        just created is observed as its creation returned it."""
        for _ in range(2 * len(STAGES) + 1):
            stage = st.current_stage(pass_.status)
            if stage is None or pass_.status.phase == Phase.FAILED:
                return
            obs = self.observer.stage(pass_.owner.namespace, spec, pass_.status, stage, job_seen)
            run = pass_.status.run
            decision = decide.moved(pass_.status, spec, obs, pass_.owner.name, generation, now_iso()) \
                or decide.stage(pass_.status, spec, obs, pass_.owner.name, generation, now_iso())
            made = pass_.act(spec, decision)
            if made is not None:
                job_seen = made
            elif decision.status.stage == stage and decision.status.run == run:  # a moved run goes on at once
                return

    def cleanup(self, namespace: str, name: str, uid: str | None) -> int:
        """Delete every Job of a deleted Reconstruction (ownerReferences do the same where a GC runs).

        Only Jobs owned by ``uid``: a namesake created since then keeps its own.
        """
        with self._lock(namespace, name):
            jobs = [j for j in self.kube.list_jobs(namespace, name)
                    if uid is None or uid in {r.get("uid") for r in j["metadata"].get("ownerReferences") or []}]
            deleted = sum(self.kube.delete_job(namespace, job["metadata"]["name"]) for job in jobs)
        with self._guard:
            self._locks.pop((namespace, name), None)
        self.written.forget(namespace, name)
        return deleted


class _Pass:
    """One pass's state: the object as last written, the status it held then, and the status being built."""

    def __init__(self, reconciler: Reconciler, owner: Owner, body: dict[str, Any]) -> None:
        self.actor, self.owner, self.body = reconciler.actor, owner, body
        self.raw_status: dict[str, Any] = body.get("status") or {}
        self.old = ReconstructionStatus.model_validate(self.raw_status)
        self.status = self.old
        self.made: dict[str, Any] | None = None

    def act(self, spec: ReconstructionSpec | None, decision: Decision) -> Any:
        """Keep the decision's status, write it when it asks to, perform its actions. Returns the status when the
        decision is final, else the Job a CreateJob made (or None)."""
        self.status = decision.status
        if decision.write == "first":
            self._write()
        made = None
        if spec is not None:
            made = self.actor.perform(self.owner, spec, self.status.run or 0, decision.actions)
        elif decision.actions:  # an invalid spec: only its Jobs go
            self.actor.delete_jobs(self.owner.namespace, self.owner.name, None)
        if decision.write == "last":
            self._write()
        return self.status if decision.final else made

    def _write(self) -> None:
        self.status, self.body = self.actor.write(self.body, self.raw_status, self.old, self.status)
        self.raw_status, self.old = self.status.to_wire(), self.status

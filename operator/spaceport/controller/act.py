"""Act: the one place that changes anything for a Reconstruction: its Jobs, its output's owner record, its status
(and the Events and metrics that follow a status change), and the queue of webhook notifications.

Status is written only here, only as the difference from the status the pass read, and only onto the version it
read (a ConflictError otherwise); every write is noted in ``Written`` so its watch event is known as an echo.
"""

from __future__ import annotations

import logging
from typing import Any

from spaceport.api import ReconstructionSpec, ReconstructionStatus, StageStatus
from spaceport.controller import metrics
from spaceport.controller import status as st
from spaceport.controller.decide import (
    Action,
    ClaimOutput,
    CreateJob,
    DeleteJob,
    DeleteJobs,
    Notify,
    PatchSuspend,
)
from spaceport.controller.events import EventPoster
from spaceport.controller.jobs import Owner, build_job
from spaceport.controller.k8s import ConflictError, Kube, OwnerMismatchError
from spaceport.controller.naming import LABEL_RUN
from spaceport.controller.notify import Notifier
from spaceport.controller.progress import StorageReader
from spaceport.controller.settings import OperatorSettings
from spaceport.controller.written import Written, own_status

log = logging.getLogger("spaceport.operator")


class RetryLater(Exception):
    """Not ready yet (e.g. a namesake Job is being deleted); the next event or timer tick retries."""


class OutputTaken(Exception):
    """The output was claimed by another Reconstruction between reading its owner record and writing ours."""


class Actor:
    def __init__(self, kube: Kube, settings: OperatorSettings, storage: StorageReader, written: Written,
                 notifier: Notifier, events: EventPoster) -> None:
        self.kube, self.settings, self.storage = kube, settings, storage
        self.written, self.notifier, self.events = written, notifier, events

    def perform(self, owner: Owner, spec: ReconstructionSpec, run: int,
                actions: tuple[Action, ...]) -> dict[str, Any] | None:
        """Carry out ``actions`` in order; returns the Job a CreateJob created or adopted (None without one)."""
        made = None
        for action in actions:
            if isinstance(action, CreateJob):
                made = self._create(owner, spec, run, action)
            elif isinstance(action, DeleteJob):
                self.kube.delete_job(owner.namespace, action.name)
            elif isinstance(action, DeleteJobs):
                self.delete_jobs(owner.namespace, owner.name, action.keep_run)
            elif isinstance(action, PatchSuspend):
                self.kube.patch_job_suspend(owner.namespace, action.job, action.suspend)
            elif isinstance(action, ClaimOutput):
                taken = self.storage.claim(owner.namespace, owner.name, owner.uid, spec)
                if taken is not None:
                    raise OutputTaken(taken)
            elif isinstance(action, Notify):
                self.notifier.submit(owner.namespace, owner.name, action.run)
        return made

    def _create(self, owner: Owner, spec: ReconstructionSpec, run: int, action: CreateJob) -> dict[str, Any]:
        ns = owner.namespace
        job = build_job(owner, spec, run, action.stage, self.settings, action.attempt, action.part)
        name = job["metadata"]["name"]
        try:  # create straight away: an existing Job answers 409 and is adopted
            raw, created = self.kube.create_job(job)
        except OwnerMismatchError as e:
            self.kube.delete_job(ns, name)
            raise RetryLater(str(e)) from e
        log.info("%s Job %s/%s for run %d", "created" if created else "adopted", ns, name, run)
        if created:
            self.written.job(ns, owner.name, raw)
            metrics.JOBS_CREATED.labels(action.stage).inc()
        return raw

    def delete_jobs(self, namespace: str, name: str, keep_run: int | None) -> None:
        for job in self.kube.list_jobs(namespace, name):
            stale = keep_run is None or job["metadata"].get("labels", {}).get(LABEL_RUN) != str(keep_run)
            if stale and self.kube.delete_job(namespace, job["metadata"]["name"]):
                log.info("deleted Job %s/%s", namespace, job["metadata"]["name"])

    def write(self, body: dict[str, Any], raw_status: dict[str, Any], old: ReconstructionStatus,
              new: ReconstructionStatus) -> tuple[ReconstructionStatus, dict[str, Any]]:
        """Write status: only the difference, only when there is one, and only onto the version the pass read
        (ConflictError otherwise). Returns the status and the object as now stored."""
        patch = st.merge_patch(raw_status, new.to_wire())
        patch.pop("kopf", None)  # never touch kopf's own bookkeeping
        if not patch:
            return new, body
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            body = self.kube.patch_reconstruction_status(ns, name, patch, meta.get("resourceVersion"))
        except ConflictError:
            # A patch is a difference from the status read: still right if only spec or metadata moved (their
            # own event brings a pass for them); if status moved, the whole pass starts again.
            fresh = self.kube.get_reconstruction(ns, name)
            if fresh is None or own_status(fresh) != own_status({"status": raw_status}):
                raise
            body = self.kube.patch_reconstruction_status(ns, name, patch, fresh["metadata"]["resourceVersion"])
        self.written.status(ns, name, body)
        for type_, reason, message in st.transitions(old, new):
            self.events.post(body, type_, reason, message)
        for stage, stage_status in new.stages.items():
            if old.run != new.run or old.stages.get(stage, StageStatus()).phase != stage_status.phase:
                metrics.TRANSITIONS.labels(stage, str(stage_status.phase)).inc()
        return new, body

    def record_notification(self, namespace: str, name: str, record: dict[str, Any]) -> None:
        """Note a webhook's outcome in status.notification (the notifier's thread calls this, under the object's
        lock)."""
        body = self.kube.patch_reconstruction_status(namespace, name, {"notification": record})
        self.written.status(namespace, name, body)

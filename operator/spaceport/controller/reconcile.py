"""One reconcile pass: observe the current run's Job, compute the next status, act, write status once.

Passes for the same Reconstruction never overlap (one lock per object), whichever handler started them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from spaceport.api import (
    STAGES,
    Phase,
    Reason,
    ReconstructionSpec,
    ReconstructionStatus,
    describe_validation_error,
    is_s3_uri,
)
from spaceport.api.reconstruction import StageStatus
from spaceport.contract import StageResult
from spaceport.controller import metrics, notify, usage
from spaceport.controller import status as st
from spaceport.controller.events import EventPoster
from spaceport.controller.jobs import CONTAINER, Owner, build_job, credentials_secret, queue_name, stage_location
from spaceport.controller.k8s import ConflictError, Kube, OwnerMismatchError
from spaceport.controller.naming import LABEL_RUN, RETRY_ANNOTATION
from spaceport.controller.notify import Notifier
from spaceport.controller.progress import StorageReader, claim_output
from spaceport.controller.settings import OperatorSettings
from spaceport.controller.written import Written, own_status

log = logging.getLogger("spaceport.operator")


ALTERNATIVE_CREDENTIALS = frozenset({"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE",
                                     "AWS_CONTAINER_CREDENTIALS_FULL_URI"})
"""Keys that give boto3 credentials without an access key pair (web identity, profiles, container endpoint)."""


class RetryLater(Exception):
    """Not ready yet (e.g. a namesake Job is being deleted); the next event or timer tick retries."""


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
        self.notifier = Notifier(kube, settings.notify_attempts, settings.notify_backoff_s)
        self.events = EventPoster(kube)

    def notify_if_due(self, body: dict[str, Any]) -> None:
        """Queue spec.notify's POST for a finished run not yet notified (also after a restart)."""
        try:
            spec = ReconstructionSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return
        status = ReconstructionStatus.model_validate(body.get("status") or {})
        if notify.due(spec, status) and status.run is not None:
            self.notifier.submit(body["metadata"]["namespace"], body["metadata"]["name"], status.run)

    def is_echo(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """True for the watch event of one of our own status writes: it holds nothing new to act on."""
        return self.written.is_echo(namespace, name, resource_version)

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

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
                rv = body["metadata"].get("resourceVersion") if body is not None else None
                if self.written.is_echo(namespace, name, rv) or (job is not None
                                                                 and self.written.is_job_echo(namespace, name, job)):
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
                        self._delete_jobs(namespace, name, keep_run=None)  # orphans: no garbage collector here
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
        raw_status = body.get("status") or {}
        old = ReconstructionStatus.model_validate(raw_status)
        try:
            spec = ReconstructionSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            if old.phase == Phase.FAILED and old.observed_generation == generation:
                return old
            self._delete_jobs(namespace, name, keep_run=None)
            new = st.invalid_spec(old, describe_validation_error(e, "spec"), generation, now_iso())
            return self._write(body, raw_status, old, new)[0]
        retry = (meta.get("annotations") or {}).get(RETRY_ANNOTATION)
        asked = retry is not None and retry != old.retry
        if old.run is not None and old.run_key == spec.run_key() and st.is_settled(old, generation) and not asked:
            self.notify_if_due(body)
            return old

        status = old
        if asked and retry is not None:
            # The new attempt's Job name reaches the API server before the Job exists, as a new run's do. (A spec
            # that changed since starts a new run below: the value is only noted.)
            status = (st.retry_run(old, name, retry, generation, now_iso()) if old.run_key == spec.run_key()
                      else old.model_copy(update={"retry": retry}))
            _, body = self._write(body, raw_status, old, status)
            raw_status, old = status.to_wire(), status
        if status.run is None or status.run_key != spec.run_key() \
                or status.reason in (Reason.INVALID_SPEC, Reason.OUTPUT_IN_USE):
            status, body = self._start_run(body, raw_status, old, spec)
            if status.phase == Phase.FAILED:  # the output belongs to another Reconstruction
                return status
            raw_status, old = status.to_wire(), status
        # A generation that changes nothing the run depends on (suspend, retries) still counts as seen.
        status = status.model_copy(update={"observed_generation": generation})

        owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
        for _ in STAGES:  # a finished stage starts the next one in the same pass
            stage = st.current_stage(status)
            if stage is None or status.phase == Phase.FAILED:
                break
            obs = self._observe(owner, spec, status, stage, job_seen)
            nxt = st.next_status(status, spec, obs, generation, now_iso())
            moved = nxt.stage != stage
            status = nxt
            if not moved:
                break
        s = self.settings
        status = status.model_copy(update={"usage": usage.total(status.stages, s.price_cpu_hour, s.price_gpu_hour,
                                                                s.price_currency)})
        status = st.with_conditions(status, now_iso())  # also for a generation that changed nothing else
        written, _ = self._write(body, raw_status, old, status)
        if notify.due(spec, written) and written.run is not None:
            self.notifier.submit(namespace, name, written.run)
        return written

    def _start_run(self, body: dict[str, Any], raw_status: dict[str, Any], old: ReconstructionStatus,
                   spec: ReconstructionSpec) -> tuple[ReconstructionStatus, dict[str, Any]]:
        """Claim the output prefix and save the next run (number and Job names) before any Job exists: a restart
        finds them. Fails with OutputInUse when another Reconstruction owns the prefix."""
        meta = body["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
        claim = claim_output(self.storage, namespace, name, meta["uid"], spec)
        if claim is not None and claim.foreign:
            self._delete_jobs(namespace, name, keep_run=None)
            new = st.invalid_spec(old, claim.foreign, generation, now_iso(), Reason.OUTPUT_IN_USE)
            return self._write(body, raw_status, old, new)
        stored = max(claim.runs) if claim is not None and claim.runs else 0
        return self._write(body, raw_status, old, st.start_run(old, spec, name, generation, now_iso(), stored))

    def _observe(self, owner: Owner, spec: ReconstructionSpec, status: ReconstructionStatus,
                 stage: str, job_seen: dict[str, Any] | None = None) -> st.Observation:
        ns = owner.namespace
        run = status.run or 0
        sst = status.stages.get(stage, StageStatus())
        job_name = sst.job or ""
        raw: dict[str, Any] | None
        queue = queue_name(spec, self.settings)
        if queue and spec.suspend and sst.phase in (Phase.PENDING, Phase.QUEUED, Phase.RUNNING, Phase.SUSPENDED):
            # Kueue owns a queued Job's suspend flag (it would undo ours): a suspended run holds no Job at all.
            held = self.kube.get_job(ns, job_name) if sst.phase != Phase.PENDING else None
            if held is None or not st.JobView.of(held).finished:
                if held is not None:
                    self.kube.delete_job(ns, job_name)
                return st.Observation(stage, None, queue=queue, held=True)
        if sst.phase == Phase.PENDING or (queue and sst.phase == Phase.SUSPENDED):
            problem = self._credentials_problem(ns, spec)
            if problem is not None:
                return st.Observation(stage, None, problem=problem)
            if run > 1:
                # Earlier runs' Jobs go before this run's first (or next) Job: also after a restart that cut
                # the previous pass short between saving the new run and deleting the old one.
                self._delete_jobs(ns, owner.name, keep_run=run)
            try:  # create straight away: an existing Job answers 409 and is adopted
                raw, created = self.kube.create_job(build_job(owner, spec, run, stage, self.settings,
                                                              sst.attempt or 1))
            except OwnerMismatchError as e:
                self.kube.delete_job(ns, job_name)
                raise RetryLater(str(e)) from e
            log.info("%s Job %s/%s for run %d", "created" if created else "adopted", ns, job_name, run)
            if created:
                self.written.job(ns, owner.name, raw)
                metrics.JOBS_CREATED.labels(stage).inc()
        elif job_seen is not None and job_seen["metadata"].get("name") == job_name:
            raw = job_seen  # the event that started this pass brought it: no need to read it again
        else:
            raw = self.kube.get_job(ns, job_name)
        uri = stage_location(spec, run, stage)
        if raw is None:  # vanished: finished before its TTL ran out while we were away?
            return st.Observation(stage, None, result=self.storage.read_result(ns, spec, uri))
        job = st.JobView.of(raw)
        if not queue and not job.finished and job.suspended != spec.suspend:
            self.kube.patch_job_suspend(ns, job.name, spec.suspend)
            job = st.JobView(**{**job.__dict__, "suspended": spec.suspend})
        if job.succeeded:
            return st.Observation(stage, job, result=self._result(ns, spec, job.name, uri), queue=queue)
        if job.failed:
            return st.Observation(stage, job, failure=self._failure(ns, job.name), queue=queue)
        progress = None if job.suspended else self.storage.read_progress(ns, spec, uri)
        return st.Observation(stage, job, progress=progress, queue=queue)

    def _credentials_problem(self, ns: str, spec: ReconstructionSpec) -> tuple[Reason, str] | None:
        """A named storage Secret that is missing (the Pod would wait) or holds no usable keys (it would fail).

        Only key names are looked at; they are not secret.
        """
        name, named = credentials_secret(spec, self.settings)
        if name is None or not named or not (is_s3_uri(spec.input.uri) or is_s3_uri(spec.output.uri)):
            return None
        field = "spec.input.credentialsSecret" if spec.input.credentials_secret else "spec.output.credentialsSecret"
        try:
            data, _ = self.kube.read_secret(ns, name)
        except ApiException as e:
            if e.status == 404:
                return Reason.WAITING_FOR_SECRET, f"{field}: waiting for Secret {name!r} in namespace {ns}"
            raise
        keys = set(data)
        if keys & ALTERNATIVE_CREDENTIALS or {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= keys:
            return None
        missing = sorted({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} - keys)
        has = ", ".join(sorted(keys)) or "no keys"
        return Reason.BAD_CREDENTIALS, (f"{field}: Secret {name!r} lacks {' and '.join(missing)} (it has: {has}); "
                                        "stages would find no S3 credentials")

    def _result(self, ns: str, spec: ReconstructionSpec, job: str, uri: str) -> StageResult | None:
        """result.json when storage is readable (complete), else the Pod's termination message (compact)."""
        result = self.storage.read_result(ns, spec, uri)
        if result is not None:
            return result
        for message in self._termination_messages(ns, job, succeeded=True):
            try:
                return StageResult.model_validate_json(message)
            except ValueError:
                continue
        return None

    def _failure(self, ns: str, job: str) -> str | None:
        for message in self._termination_messages(ns, job, succeeded=False):
            try:
                data = json.loads(message)
            except ValueError:
                return message.strip()[:1000] or None
            if isinstance(data, dict) and data.get("message"):
                return f"{data.get('reason', 'Error')}: {data['message']}"
        return None

    def _termination_messages(self, ns: str, job: str, succeeded: bool) -> list[str]:
        messages: list[tuple[str, str]] = []
        for pod in self.kube.list_job_pods(ns, job):
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated") or {}
                if cs.get("name") != CONTAINER or not term.get("message"):
                    continue
                if (term.get("exitCode") == 0) == succeeded:
                    messages.append((term.get("finishedAt") or "", term["message"]))
        return [m for _, m in sorted(messages, reverse=True)]  # the latest attempt first

    def _delete_jobs(self, namespace: str, name: str, keep_run: int | None) -> None:
        for job in self.kube.list_jobs(namespace, name):
            stale = keep_run is None or job["metadata"].get("labels", {}).get(LABEL_RUN) != str(keep_run)
            if stale and self.kube.delete_job(namespace, job["metadata"]["name"]):
                log.info("deleted Job %s/%s", namespace, job["metadata"]["name"])

    def _write(self, body: dict[str, Any], raw_status: dict[str, Any], old: ReconstructionStatus,
               new: ReconstructionStatus) -> tuple[ReconstructionStatus, dict[str, Any]]:
        """The one place status is written: only the difference, only when there is one, and only onto the
        version the pass read (ConflictError otherwise). Returns the status and the object as now stored."""
        patch = st.merge_patch(raw_status, new.to_wire())
        patch.pop("kopf", None)  # never touch kopf's own bookkeeping
        if patch:
            meta = body["metadata"]
            ns, name = meta["namespace"], meta["name"]
            try:
                body = self.kube.patch_reconstruction_status(ns, name, patch, meta.get("resourceVersion"))
            except ConflictError:
                # A patch is a difference from the status read: still right if only spec or metadata moved
                # (their own event brings a pass for them); if status moved, the whole pass starts again.
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

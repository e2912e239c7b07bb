"""The only module that calls the Kubernetes API (through the synchronous official client).

Handlers run in kopf's thread pool, so blocking calls are fine here. Objects go in and out as dicts.
"""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from spaceport.api import GROUP, KIND, PLURAL, VERSION
from spaceport.controller.naming import LABEL_RECON, label_value

log = logging.getLogger("spaceport.operator.k8s")

MERGE_PATCH = "application/merge-patch+json"
TIMEOUT = (5.0, 30.0)
"""Connect and read timeouts (s) of every call: a hung connection must not hold a handler thread (and the
Reconstruction's lock) forever; the next event or timer tick retries."""
RAW: dict[str, Any] = {"_preload_content": False, "_request_timeout": TIMEOUT}
"""Plain JSON back (no model objects to build and convert again), within the timeouts."""


class OwnerMismatchError(Exception):
    """A Job with our deterministic name belongs to another object (e.g. a deleted namesake)."""


class ConflictError(Exception):
    """The object changed since the resourceVersion a write was conditional on."""


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def for_url(cls, url: str, pool_size: int = 16) -> Kube:
        """A client for a plain-HTTP API server (tests, benchmarks)."""
        config = client.Configuration()
        config.host = url.rstrip("/")
        config.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(config))

    def _json(self, obj: Any) -> Any:
        return self.api_client.sanitize_for_serialization(obj)

    # Reconstructions
    def get_reconstruction(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                            _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_reconstruction_status(self, namespace: str, name: str, patch: dict[str, Any],
                                    resource_version: str | None = None) -> dict[str, Any]:
        """Merge ``patch`` into status; with ``resource_version``, only if the object is still at that version."""
        body: dict[str, Any] = {"status": patch}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type=MERGE_PATCH, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status == 409:
                raise ConflictError(f"Reconstruction {namespace}/{name} changed since {resource_version}") from e
            raise

    # Jobs
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = self.batch.read_namespaced_job(name, namespace, **RAW)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return _body(resp)

    def create_job(self, job: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the Job, or adopt the one that exists under that name. Returns (job, created)."""
        meta = job["metadata"]
        try:
            resp = self.batch.create_namespaced_job(meta["namespace"], job, **RAW)
            return _body(resp), True
        except ApiException as e:
            if e.status != 409:
                raise
        existing = self.get_job(meta["namespace"], meta["name"])
        if existing is None:  # deleted between our create and get: let the next pass create it
            raise OwnerMismatchError(f"Job {meta['name']} vanished while being adopted")
        if existing["metadata"].get("deletionTimestamp"):  # e.g. deleted on suspend in a queue: wait for it
            raise OwnerMismatchError(f"Job {meta['name']} is still being deleted")
        wanted = {r["uid"] for r in meta.get("ownerReferences", [])}
        owners = {r.get("uid") for r in existing["metadata"].get("ownerReferences") or []}
        if wanted and not wanted & owners:
            raise OwnerMismatchError(f"Job {meta['name']} exists but belongs to another owner")
        return existing, False

    def patch_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        _release(self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}}, **RAW))

    def delete_job(self, namespace: str, name: str) -> bool:
        try:
            # Background: Kubernetes' garbage collector removes the Pods after the Job.
            _release(self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background", **RAW))
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def list_jobs(self, namespace: str, recon: str) -> list[dict[str, Any]]:
        resp = self.batch.list_namespaced_job(namespace, label_selector=f"{LABEL_RECON}={label_value(recon)}",
                                              **RAW)
        return list(_body(resp).get("items") or [])

    def list_job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}", **RAW)
        return list(_body(resp).get("items") or [])

    # Secrets: values stay in memory, never logged
    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        """The Secret's decoded data and its resourceVersion."""
        secret = self.core.read_namespaced_secret(name, namespace, **RAW)
        body = _body(secret)
        data = {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}
        data.update(body.get("stringData") or {})
        return data, str(body.get("metadata", {}).get("resourceVersion", ""))

    # Events
    def post_event(self, recon: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = recon["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name'][:200]}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "spaceport-operator"},
            "reportingComponent": "spaceport.dev/operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            _release(self.core.create_namespaced_event(meta["namespace"], event, **RAW))
        except ApiException as e:  # events are advisory: never fail a reconcile over one
            log.warning("cannot post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e.reason)


def _body(resp: Any) -> dict[str, Any]:
    import json

    return json.loads(resp.data)  # reading it all hands the connection back to the pool


def _release(resp: Any) -> None:
    """Finish an answer whose body we do not need. Unread, its connection never went back to urllib3's pool:
    every Event POSTed opened a new connection (a new TLS handshake on a real cluster)."""
    resp.drain_conn()
    resp.release_conn()

"""Reads what running stages write to storage: progress.json while they run, result.json when done; and keeps
the output prefix's ownership record (owner.json), the one thing the operator itself writes there.

Only S3 outputs can be read: the operator mounts no volumes, so for outputs on a PersistentVolumeClaim
status mirrors the Job's state only (no fraction, message or ETA) and metrics come from the Pod's
termination message. For S3 the operator reads the Reconstruction's credentials Secret through the API
into memory (the chart grants ``get`` on Secrets in watched namespaces); the values never leave the
boto3 client. Without a credentialsSecret the operator's own AWS environment is used (e.g. IRSA).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydantic import ValidationError

from spaceport.api import ReconstructionSpec, is_s3_uri
from spaceport.contract import PROGRESS_FILE, RESULT_FILE, OutputInUseError, ProgressRecord, StageResult, claim_owner
from spaceport.controller.k8s import Kube
from spaceport.storage import S3Store, StorageError, s3_client

log = logging.getLogger("spaceport.operator.progress")


class StorageReader:
    def __init__(self, kube: Kube, cache_seconds: float = 60.0, default_secret: str | None = None) -> None:
        self._kube = kube
        self._default_secret = default_secret
        self._cache_seconds = cache_seconds
        self._clients: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def store(self, namespace: str, spec: ReconstructionSpec, uri: str) -> S3Store | None:
        if not is_s3_uri(uri):
            return None
        secret = spec.output.credentials_secret or spec.input.credentials_secret or self._default_secret
        try:
            return S3Store(uri, self._client(namespace, secret))
        except Exception as e:  # no readable credentials: status shows Job state only
            log.info("cannot read %s/%s for progress: %s", namespace, secret or "(operator environment)",
                     type(e).__name__)
            return None

    def _client(self, namespace: str, secret: str | None) -> Any:
        key = (namespace, secret or "")
        now = time.monotonic()
        with self._lock:
            cached = self._clients.get(key)
            if cached and now - cached[0] < self._cache_seconds:
                return cached[1]
        if not secret:
            made = s3_client()
        else:
            data, _ = self._kube.read_secret(namespace, secret)
            made = _client_from_secret(data)
        with self._lock:
            self._clients[key] = (now, made)
        return made

    def read_progress(self, namespace: str, spec: ReconstructionSpec, uri: str) -> ProgressRecord | None:
        store = self.store(namespace, spec, uri)
        if store is None:
            return None
        try:
            return ProgressRecord.model_validate_json(store.read_bytes(PROGRESS_FILE))
        except (StorageError, ValidationError, ValueError):
            return None

    def read_result(self, namespace: str, spec: ReconstructionSpec, uri: str) -> StageResult | None:
        store = self.store(namespace, spec, uri)
        if store is None:
            return None
        try:
            return StageResult.model_validate_json(store.read_bytes(RESULT_FILE))
        except (StorageError, ValidationError, ValueError):
            return None


class OutputClaim:
    """What the output prefix holds: the run folders already there, and whether another Reconstruction owns it."""

    def __init__(self, runs: list[int], foreign: str | None = None) -> None:
        self.runs, self.foreign = runs, foreign


def claim_output(reader: StorageReader, namespace: str, name: str, uid: str, spec: ReconstructionSpec
                 ) -> OutputClaim | None:
    """Read (or, when there is none, write) the output prefix's owner record, and list its run folders.

    None when the operator cannot read that storage (volumes, which it does not mount; or no credentials yet):
    then run numbers come from status alone, and the stages check the owner record and their fingerprints.
    """
    store = reader.store(namespace, spec, spec.output.uri)
    if store is None:
        return None
    try:
        try:
            claim_owner(store, namespace, name, uid)
        except OutputInUseError as e:
            return OutputClaim([], str(e))
        return OutputClaim(sorted(int(n) for n in store.folders("runs") if n.isdigit()))
    except (StorageError, ValueError) as e:
        log.info("cannot read the owner of %s: %s", spec.output.uri, e)
        return None


def _client_from_secret(data: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = data.get("AWS_ENDPOINT_URL_S3") or data.get("AWS_ENDPOINT_URL")
    style = data.get("AWS_S3_ADDRESSING_STYLE") or ("path" if endpoint else None)
    session = boto3.session.Session(
        aws_access_key_id=data.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=data.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=data.get("AWS_SESSION_TOKEN"),
        region_name=data.get("AWS_REGION") or data.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    config = Config(s3={"addressing_style": style} if style else {}, retries={"mode": "standard", "max_attempts": 2},
                    connect_timeout=3, read_timeout=5)
    return session.client("s3", endpoint_url=endpoint, config=config)

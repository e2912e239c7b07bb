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
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from spaceport.api import ReconstructionSpec, is_s3_uri
from spaceport.api.stages import PROGRESS_FILE, RESULT_FILE, RUNS_DIR
from spaceport.contract import OutputInUseError, ProgressRecord, StageResult, claim_owner, read_owner
from spaceport.controller.k8s import Kube
from spaceport.storage import S3Store, StorageError, s3_client

log = logging.getLogger("spaceport.operator.progress")


@dataclass(frozen=True)
class OutputView:
    """What the output prefix holds: its owner record (None: unclaimed) and the run folders already there."""

    uri: str
    owner: dict[str, Any] | None
    runs: tuple[int, ...] = ()


class StorageReader:
    """S3 stores for Reconstructions, with clients made from their credentials Secrets (cached a while)."""

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
        settings = self._kube.read_secret(namespace, secret)[0] if secret else None
        made = s3_client(settings, quick=True)
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

    def output_view(self, namespace: str, spec: ReconstructionSpec) -> OutputView | None:
        """The output prefix's owner record and run folders (read only).

        None when the operator cannot read that storage (volumes, which it does not mount; or no credentials yet):
        then run numbers come from status alone, and the stages check the owner record and their fingerprints.
        """
        store = self.store(namespace, spec, spec.output.uri)
        if store is None:
            return None
        try:
            runs = tuple(sorted(int(n) for n in store.folders(RUNS_DIR) if n.isdigit()))
            return OutputView(store.uri, read_owner(store), runs)
        except (StorageError, ValueError) as e:
            log.info("cannot read the owner of %s: %s", spec.output.uri, e)
            return None

    def claim(self, namespace: str, name: str, uid: str, spec: ReconstructionSpec) -> str | None:
        """Write the owner record for (namespace, name, uid) where there is none. Returns why the output is another
        Reconstruction's, should one have claimed it since it was read; None otherwise (also when unreadable)."""
        store = self.store(namespace, spec, spec.output.uri)
        if store is None:
            return None
        try:
            claim_owner(store, namespace, name, uid)
        except OutputInUseError as e:
            return str(e)
        except (StorageError, ValueError) as e:
            log.info("cannot claim %s: %s", spec.output.uri, e)
        return None

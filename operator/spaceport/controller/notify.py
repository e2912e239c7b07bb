"""spec.notify: one webhook POST per finished run, sent from a background thread, never from a reconcile.

Delivery is at least once: the run is recorded in ``status.notification`` after the POST, so an operator
killed between the two sends it again after a restart; the ``Idempotency-Key`` header (uid and run) lets
the receiver drop that repeat. A run recorded there is never POSTed again, by this replica or another.
Retries: connection errors, 429 and 5xx, with doubling backoff; other answers are final.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from spaceport.api import Phase, ReconstructionSpec, ReconstructionStatus
from spaceport.controller.k8s import Kube

log = logging.getLogger("spaceport.operator.notify")

TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)


def due(spec: ReconstructionSpec, status: ReconstructionStatus) -> bool:
    """A finished run with a webhook that has not been recorded as notified."""
    if spec.notify is None or status.phase not in TERMINAL or status.run is None:
        return False
    return status.notification is None or status.notification.run != status.run


def payload(body: dict[str, Any], status: ReconstructionStatus) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid"),
        "run": status.run, "phase": str(status.phase), "reason": str(status.reason or ""),
        "message": status.message or "", "stage": status.stage, "runUri": status.run_uri,
        "outputs": dict(status.outputs), "metrics": status.metrics.to_wire(),
        "usage": status.to_wire().get("usage"),
    }


Recorder = Callable[[str, str, dict[str, Any]], None]
"""Writes a run's notification record into status.notification: (namespace, name, record)."""


class Notifier:
    """Sends; never writes status itself: ``record`` (the reconciler's one status writer) does."""

    def __init__(self, kube: Kube, record: Recorder, attempts: int = 6, backoff_s: float = 1.0,
                 timeout_s: float = 10.0) -> None:
        self.kube, self.record = kube, record
        self.attempts, self.backoff_s, self.timeout_s = attempts, backoff_s, timeout_s
        self._queue: queue.Queue[tuple[str, str, int]] = queue.Queue()
        self._pending: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, namespace: str, name: str, run: int) -> None:
        """Queue the run's notification unless it is queued already; returns at once."""
        key = (namespace, name, run)
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="spaceport-notify", daemon=True)
                self._thread.start()
        self._queue.put(key)

    def _work(self) -> None:
        while True:
            key = self._queue.get()
            try:
                self._deliver(*key)
            except Exception as e:  # never kill the thread: the next run still gets its notification
                log.warning("notification for %s/%s run %d: %s", key[0], key[1], key[2], type(e).__name__)
            finally:
                with self._lock:
                    self._pending.discard(key)

    def _deliver(self, namespace: str, name: str, run: int) -> None:
        body = self.kube.get_reconstruction(namespace, name)
        if body is None:
            return
        spec = ReconstructionSpec.model_validate(body.get("spec") or {})
        status = ReconstructionStatus.model_validate(body.get("status") or {})
        if not due(spec, status) or status.run != run or spec.notify is None:
            return
        headers = {"Content-Type": "application/json", "User-Agent": "spaceport-operator",
                   "Idempotency-Key": f"{body['metadata'].get('uid')}-r{run}"}
        if spec.notify.auth_secret is not None:
            ref = spec.notify.auth_secret
            data, _ = self.kube.read_secret(namespace, ref.name)
            if ref.key not in data:
                self._record(namespace, name, status, "Failed", 0,
                             f"spec.notify.authSecret: Secret {ref.name!r} has no key {ref.key!r}")
                return
            headers["Authorization"] = data[ref.key]
        data = json.dumps(payload(body, status)).encode()
        error = ""
        for attempt in range(1, self.attempts + 1):
            retry, error = self._post(spec.notify.url, data, headers)
            if not error:
                self._record(namespace, name, status, "Sent", attempt, None)
                log.info("notified %s for %s/%s run %d (%s)", spec.notify.url, namespace, name, run, status.phase)
                return
            if not retry:
                break
            if attempt < self.attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        self._record(namespace, name, status, "Failed", attempt, error)
        log.warning("notification for %s/%s run %d failed: %s", namespace, name, run, error)

    def _post(self, url: str, data: bytes, headers: dict[str, str]) -> tuple[bool, str]:
        """(retry?, error); error is empty on success. Errors never include the headers (the secret)."""
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                resp.read()
            return False, ""
        except urllib.error.HTTPError as e:
            return e.code == 429 or e.code >= 500, f"HTTP {e.code} from {url}"
        except (urllib.error.URLError, OSError) as e:
            return True, f"{type(e).__name__} reaching {url}"

    def _record(self, namespace: str, name: str, status: ReconstructionStatus, state: str, attempts: int,
                error: str | None) -> None:
        record = {"run": status.run, "phase": str(status.phase), "state": state, "attempts": attempts,
                  "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "lastError": error}
        self.record(namespace, name, record)

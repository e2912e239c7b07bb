"""What this replica wrote itself, so that the watch events it causes cost no reconcile pass.

Every status write and every Job creation comes back through a watch as an event. Such an event (same
resourceVersion as the write's answer) holds nothing the pass that made it did not already know, and under
load those echoes were about a third of all passes (bench/operator_load.py). The last status written also
tells whether a watch event's body is current: a body that carries it was taken after that write.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

ECHOES_KEPT = 4
"""Status writes remembered per Reconstruction: a pass writes at most twice, and its events may arrive after
the next pass's writes."""


class Written:
    """Per Reconstruction: the resourceVersions of our last status writes and Job creations (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], deque[str]] = {}
        self._status: dict[tuple[str, str], dict[str, Any]] = {}
        self._jobs: dict[tuple[str, str], dict[str, str]] = {}

    def status(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Note the object the API server answered a status write with."""
        key = (namespace, name)
        with self._lock:
            self._versions.setdefault(key, deque(maxlen=ECHOES_KEPT)).append(body["metadata"]["resourceVersion"])
            self._status[key] = own_status(body)

    def job(self, namespace: str, recon: str, job: dict[str, Any]) -> None:
        """Note a Job we created (its ADDED event is an echo)."""
        with self._lock:
            self._jobs.setdefault((namespace, recon), {})[job["metadata"]["name"]] = job["metadata"]["resourceVersion"]

    def is_echo(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """True for the watch event of one of our own status writes."""
        with self._lock:
            return resource_version is not None and resource_version in self._versions.get((namespace, name), ())

    def is_job_echo(self, namespace: str, recon: str, job: dict[str, Any]) -> bool:
        """True (once) for the event of a Job exactly as we created it."""
        meta = job["metadata"]
        with self._lock:
            jobs = self._jobs.get((namespace, recon), {})
            if meta.get("resourceVersion") is not None and jobs.get(meta["name"]) == meta["resourceVersion"]:
                del jobs[meta["name"]]
                return True
            return False

    def is_current(self, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """Whether a watch event's body can stand in for a fresh GET: it carries our last status write (or we
        wrote none). A body from before that write would make the pass act on a status we already replaced.
        Anything newer than the body (a spec change, another writer) sends its own event, and every status write
        is conditional on the body's resourceVersion, so a pass on an outdated body writes nothing."""
        with self._lock:
            last = self._status.get((namespace, name))
        return last is None or own_status(body) == last

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for table in (self._versions, self._status, self._jobs):
                table.pop((namespace, name), None)


def own_status(body: dict[str, Any]) -> dict[str, Any]:
    """The object's status without kopf's bookkeeping (kopf may write there too; not ours to compare)."""
    return {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}

"""What this replica wrote and read itself, so that the watch events it causes cost no reconcile pass and
passes need not read back what they already know.

Every status write and every Job creation comes back through a watch as an event. Such an event (same
resourceVersion as the write's answer) holds nothing the pass that made it did not already know, and under
load those echoes were about a third of all passes (bench/operator_load.py). The last status known (written
or read) tells whether a body is current: a body that carries it was taken after that write or read. The
last current body of a running Reconstruction stands in for a GET in passes that Job events start.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from spaceport.controller.status import TERMINAL

ECHOES_KEPT = 4
"""Status writes remembered per Reconstruction: a pass writes at most twice, and its events may arrive after
the next pass's writes."""


class Written:
    """Per Reconstruction: our last status writes and Job creations, the last status and body known (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], deque[str]] = {}
        self._status: dict[tuple[str, str], dict[str, Any]] = {}
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._jobs: dict[tuple[str, str], dict[str, str]] = {}

    def status(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Note the object the API server answered a status write with."""
        with self._lock:
            self._versions.setdefault((namespace, name), deque(maxlen=ECHOES_KEPT)).append(
                body["metadata"]["resourceVersion"])
        self.seen(namespace, name, body)

    def seen(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Note a current body: a write's answer, a GET's, or an event's that ``is_current``."""
        key = (namespace, name)
        status = own_status(body)
        with self._lock:
            self._status[key] = status
            if status.get("phase") in TERMINAL:  # a finished run's Job events are rare: no need to keep it
                self._bodies.pop(key, None)
            else:
                self._bodies[key] = body

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The last current body of a running Reconstruction, if any. It may miss a change whose event has not
        been handled yet: that event starts its own pass, and status writes are conditional on its version."""
        with self._lock:
            return self._bodies.get((namespace, name))

    def job(self, namespace: str, recon: str, job: dict[str, Any]) -> None:
        """Note a Job we created (its ADDED event is an echo)."""
        with self._lock:
            self._jobs.setdefault((namespace, recon), {})[job["metadata"]["name"]] = job["metadata"]["resourceVersion"]

    def is_echo_event(self, namespace: str, name: str, body: dict[str, Any] | None = None,
                      job: dict[str, Any] | None = None) -> bool:
        """The one echo test: True for the event of one of our own status writes (``body``) or of a Job exactly as
        we created it (``job``; true once)."""
        rv = body["metadata"].get("resourceVersion") if body is not None else None
        return self.is_echo(namespace, name, rv) or (job is not None and self.is_job_echo(namespace, name, job))

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
        """Whether a watch event's body can stand in for a fresh GET: it carries the last status we wrote or
        read (or we know none). A body from before that would make the pass act on a status already replaced.
        Anything newer than the body (a spec change, another writer) sends its own event, and every status write
        is conditional on the body's resourceVersion, so a pass on an outdated body writes nothing."""
        with self._lock:
            last = self._status.get((namespace, name))
        return last is None or own_status(body) == last

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for table in (self._versions, self._status, self._bodies, self._jobs):
                table.pop((namespace, name), None)


def own_status(body: dict[str, Any]) -> dict[str, Any]:
    """The object's status without kopf's bookkeeping (kopf may write there too; not ours to compare)."""
    return {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}

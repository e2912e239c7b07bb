"""Kubernetes Events about Reconstructions, posted by one background thread, never inside a reconcile pass.

Events are advisory (``kubectl describe``), but posting them inline made a pass wait on eight POSTs per run,
two of them before a new Reconstruction's first Job. A pass now only queues them; one thread posts them in
order. Under a burst that thread falls behind instead of holding handler threads, and the queue is bounded:
past ``limit`` events waiting, new ones are dropped (logged), as Kubernetes itself may drop Events.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from spaceport.controller.k8s import Kube

log = logging.getLogger("spaceport.operator.events")


class EventPoster:
    def __init__(self, kube: Kube, limit: int = 10_000) -> None:
        self.kube = kube
        self._queue: queue.Queue[tuple[dict[str, Any], str, str, str]] = queue.Queue(maxsize=limit)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def post(self, recon: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event about ``recon``; returns at once."""
        meta = recon["metadata"]
        # Only what the Event names: the body itself is not kept alive in the queue.
        about = {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion")}}
        try:
            self._queue.put_nowait((about, type_, reason, message))
        except queue.Full:
            log.warning("event %s for %s/%s dropped: %d events wait to be posted", reason, meta["namespace"],
                        meta["name"], self._queue.maxsize)
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="spaceport-events", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            about, type_, reason, message = self._queue.get()
            try:
                self.kube.post_event(about, type_, reason, message)
            except Exception as e:  # never kill the thread; Kube.post_event already logs API refusals
                log.warning("cannot post event %s: %s", reason, type(e).__name__)

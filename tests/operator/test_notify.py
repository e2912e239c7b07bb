"""spec.notify: a local webhook receives one POST per finished run, retried on 503, never again after a restart."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.operator.harness import Cluster
from tests.operator.test_lifecycle import result, spec_for

TOKEN = "Bearer hook-token-never-in-status"


class Hook:
    """An HTTP server on 127.0.0.1 that answers 503 to the first ``failures`` POSTs, then 204."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = 503 if len(hook.calls) < hook.failures else 204
                hook.calls.append((code, dict(self.headers), body))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/spaceport"

    def delivered(self) -> list[dict[str, Any]]:
        return [body for code, _, body in self.calls if code == 204]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook(failures=2)
    thread = threading.Thread(target=h.server.serve_forever, daemon=True)
    thread.start()
    yield h
    h.server.shutdown()


async def test_one_post_per_finished_run_with_retries(cluster: Cluster, buckets: tuple[str, str], hook: Hook) -> None:
    await cluster.create_secret("hook-auth", {"token": TOKEN})
    await cluster.create_recon("site", spec_for(buckets, notify={
        "url": hook.url, "authSecret": {"name": "hook-auth", "key": "token"}}))
    run = f"s3://{buckets[1]}/site/runs/1"
    for stage in ("sfm", "train", "compress"):
        await cluster.wait_job(f"site-r1-{stage}")
        outputs = {"sog": f"{run}/compress/scene.sog"} if stage == "compress" else {}
        await cluster.succeed_job(f"site-r1-{stage}", f"{run}/{stage}", result(stage, {"gaussians": 7}, outputs))
    status = await cluster.wait_status("site", lambda s: (s.get("notification") or {}).get("state") == "Sent",
                                       "notification recorded")
    assert status["notification"]["run"] == 1 and status["notification"]["phase"] == "Succeeded"
    assert status["notification"]["attempts"] == 3  # two 503s, then delivered
    [body] = hook.delivered()
    assert body["phase"] == "Succeeded" and body["name"] == "site" and body["run"] == 1
    assert body["outputs"]["sog"] == f"{run}/compress/scene.sog" and body["outputs"]["ply"] == f"{run}/train/splats.ply"
    assert body["metrics"]["gaussians"] == 7
    headers = hook.calls[-1][1]
    assert headers["Authorization"] == TOKEN and headers["Idempotency-Key"].endswith("-r1")
    assert TOKEN not in json.dumps(await cluster.recon("site")) + json.dumps(await cluster.events("site"))

    # A restarted operator sees the run recorded as notified: no second POST.
    await cluster.kill_operator()
    await cluster.start_operator()
    await asyncio.sleep(1.0)
    assert len(hook.calls) == 3

    # A failed new run is notified too, once.
    await cluster.patch_spec("site", {"train": {"iterations": 500}})
    await cluster.wait_job("site-r2-sfm")
    await cluster.fail_job("site-r2-sfm", "PodFailurePolicy", "exit 2",
                           pod_message='{"stage":"sfm","reason":"BadInput","message":"no images found under x"}')
    status = await cluster.wait_status("site", lambda s: (s.get("notification") or {}).get("run") == 2, "run 2 sent")
    assert status["notification"]["phase"] == "Failed"
    assert hook.delivered()[-1]["message"] == "sfm failed: BadInput: no images found under x"
    assert len(hook.delivered()) == 2

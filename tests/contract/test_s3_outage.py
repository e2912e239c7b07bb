"""The S3 server goes away mid-upload and comes back: the stage retries, and a result.json is never readable before
every file it names is whole. moto serves S3 over HTTP behind a proxy that drops connections on cue."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spaceport.contract import RESULT_FILE, RetryableError, StageResult
from spaceport.stages.runner import run_stage
from spaceport.storage import S3Store, s3_client
from tests.compress.helpers import small_scene, write_train_output
from tests.s3 import s3_environment

CONFIG = {"kmeansIterations": 2, "formats": ["sog", "sog-unbundled"], "qualityViews": 0}


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards HTTP to moto; once a request matches ``trigger``, it and the next ``drops - 1`` requests find the
    server gone (connection closed, no response), then it is back."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream.removeprefix("http://")
        self.trigger: Callable[[str, str], bool] = lambda method, path: False
        self.drops = 0
        self.dropped: list[str] = []
        self.armed = False
        self.lock = threading.Lock()

    def arm(self, trigger: Callable[[str, str], bool], drops: int) -> None:
        with self.lock:
            self.trigger, self.drops, self.armed = trigger, drops, True

    def should_drop(self, method: str, path: str) -> bool:
        with self.lock:
            if self.armed and self.trigger(method, path):
                self.armed = False
            if not self.armed and self.drops > 0:
                self.drops -= 1
                self.dropped.append(f"{method} {path}")
                return True
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(http.server.BaseHTTPRequestHandler):
    server: FlakyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        pass

    def _any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.should_drop(self.command, self.path):
            self.close_connection = True  # gone: no status line, no body
            return
        conn = http.client.HTTPConnection(self.server.upstream, timeout=30)
        conn.request(self.command, self.path, body=body, headers=dict(self.headers))
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        # A HEAD answer has no body but tells the object's length.
        self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                         else str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any


@pytest.fixture
def proxy(s3_endpoint: str, s3_bucket: str) -> Iterator[FlakyProxy]:
    """Stages reach S3 through the proxy (the bucket is made first, directly)."""
    server = FlakyProxy(s3_endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with s3_environment(server.url):
        yield server
    server.shutdown()


class ResultWatcher(threading.Thread):
    """Reads the output straight from moto, as the operator would, the whole time the stage runs: whenever
    result.json is there, every file it names must be there, whole."""

    def __init__(self, bucket: str, prefix: str, endpoint: str) -> None:
        super().__init__(daemon=True)
        import boto3

        self.store = S3Store(f"s3://{bucket}/{prefix}", boto3.client("s3", endpoint_url=endpoint))
        self.stop, self.seen, self.problems = threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                raw = self.store.read_bytes(RESULT_FILE)
            except Exception:
                time.sleep(0.01)
                continue
            self.seen += 1
            result = StageResult.model_validate_json(raw)
            for name, uri in result.outputs.items():
                key = uri.removeprefix(self.store.uri + "/")
                if not self.store.exists(key) or self.store.size(key) == 0:
                    self.problems.append(f"{name}: {uri} missing while result.json was readable")
            time.sleep(0.01)


def _upload_of_outputs(method: str, path: str) -> bool:
    return method == "PUT" and "/compress/" in path and not path.endswith(("progress.json", "attempt.json"))


def _run(proxy: FlakyProxy, s3_endpoint: str, bucket: str, train: Path) -> tuple[StageResult | Exception, Any]:
    watcher = ResultWatcher(bucket, "runs/1/compress", s3_endpoint)
    watcher.start()
    try:
        outcome: StageResult | Exception = run_stage("compress", str(train), f"s3://{bucket}/runs/1/compress", CONFIG)
    except RetryableError as e:
        outcome = e
    finally:
        time.sleep(0.1)
        watcher.stop.set()
        watcher.join()
    return outcome, watcher


def test_a_short_outage_mid_upload_is_retried_within_the_stage(proxy: FlakyProxy, s3_endpoint: str,
                                                               s3_bucket: str, tmp_path: Path) -> None:
    train = write_train_output(tmp_path / "train", small_scene(800), cameras=0)
    proxy.arm(_upload_of_outputs, drops=2)  # boto3's standard mode makes 3 attempts
    result, watcher = _run(proxy, s3_endpoint, s3_bucket, train)
    assert isinstance(result, StageResult), result
    assert len(proxy.dropped) == 2 and all("/compress/" in d for d in proxy.dropped)
    assert watcher.problems == [] and watcher.seen > 0
    store = S3Store(f"s3://{s3_bucket}/runs/1/compress", s3_client())
    assert store.read_bytes("scene.sog")[:2] == b"PK"  # whole


def test_a_long_outage_fails_retryable_leaves_no_result_and_the_rerun_completes(
        proxy: FlakyProxy, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    train = write_train_output(tmp_path / "train", small_scene(800), cameras=0)
    proxy.arm(_upload_of_outputs, drops=12)  # longer than boto3 retries: the stage fails, the Job would retry it
    failed, watcher = _run(proxy, s3_endpoint, s3_bucket, train)
    assert isinstance(failed, RetryableError) and "cannot reach S3" in str(failed), failed
    assert watcher.seen == 0 and watcher.problems == []
    proxy.drops = 0  # the server is back; the Job's next Pod runs the same stage into the same folder
    store = S3Store(f"s3://{s3_bucket}/runs/1/compress", s3_client())
    assert not store.exists(RESULT_FILE) and store.exists("attempt.json")
    result, watcher = _run(proxy, s3_endpoint, s3_bucket, train)
    assert isinstance(result, StageResult), result
    assert watcher.problems == [] and watcher.seen > 0
    assert json.loads(store.read_bytes(RESULT_FILE))["fingerprint"] == result.fingerprint
    for uri in result.outputs.values():
        assert store.size(uri.removeprefix(store.uri + "/")) > 0

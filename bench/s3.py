"""S3 storage for the operator benchmarks: a moto server in its own process, buckets, and the Secret.

The operator reads an S3-backed Reconstruction's credentials Secret before it creates the first Job,
and mirrors ``progress.json`` / reads ``result.json`` from the bucket while and after a stage runs:
work a volume-backed run never does. moto runs as a separate process (tests/s3.py runs it in-process)
so that its CPU does not share a GIL with the emulated API server and the harness here.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-s3"
BUCKETS = ("photos", "results")
KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
STORAGES = ("volume", "s3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server process on a free loopback port, with the benchmarks' buckets; yields its URL."""
    port = _free_port()
    proc = subprocess.Popen([str(ROOT / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {url}") from None
                time.sleep(0.1)
        s3 = client(url)
        for bucket in BUCKETS:
            s3.create_bucket(Bucket=bucket)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def client(url: str) -> Any:
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"], region_name=KEYS["AWS_REGION"])


def secret(url: str) -> dict[str, Any]:
    """The credentials Secret an S3-backed Reconstruction names, as a user would create it."""
    data = {**KEYS, "AWS_ENDPOINT_URL": url}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def spec(storage: str, name: str) -> dict[str, Any]:
    """A Reconstruction's input and output on a volume claim or in the moto buckets."""
    if storage == "s3":
        return {"input": {"uri": f"s3://photos/{name}", "credentialsSecret": SECRET},
                "output": {"uri": f"s3://results/{name}", "credentialsSecret": SECRET}}
    return {"input": {"uri": f"photos/{name}", "volumeClaim": "photos"},
            "output": {"uri": f"results/{name}", "volumeClaim": "results"}}


def output_uri(job: dict[str, Any]) -> str:
    """Where a stage Job writes: its container's ``--output`` argument."""
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return str(args[args.index("--output") + 1])


def put(s3: Any, uri: str, key: str, body: str) -> None:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{key}", Body=body.encode())


def storages(choice: str) -> tuple[str, ...]:
    return STORAGES if choice == "both" else (choice,)


__all__ = ["SECRET", "STORAGES", "client", "moto_server", "output_uri", "put", "secret", "spec", "storages"]

"""S3 (and MinIO, Ceph, moto): the one factory of boto3 clients, and a store on a bucket prefix.

Settings come from a mapping of the standard AWS variables: the process environment (the stages, `spaceport run`)
or a Reconstruction's credentials Secret (the operator). Addressing is path-style when a custom endpoint is set,
unless ``AWS_S3_ADDRESSING_STYLE`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spaceport.storage.base import (
    AlreadyExistsError,
    NotFoundError,
    ProgressCallback,
    StorageError,
    Store,
    join_key,
    safe_key,
)


def content_type(key: str) -> str:
    """The Content-Type S3 serves an object with: a bucket served as a website shows the viewer page."""
    import mimetypes

    if key.endswith(".js"):
        return "text/javascript"
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


ACCESS_KEY_PAIR = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
ALTERNATIVE_CREDENTIALS = frozenset({"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE",
                                     "AWS_CONTAINER_CREDENTIALS_FULL_URI"})
"""Keys that give boto3 credentials without an access key pair (web identity, profiles, container endpoint)."""


def credentials_problem(keys: frozenset[str] | set[str]) -> str | None:
    """Why settings with these keys (a credentials Secret's) give boto3 no credentials; None when they do."""
    if keys & ALTERNATIVE_CREDENTIALS or set(ACCESS_KEY_PAIR) <= keys:
        return None
    missing = sorted(set(ACCESS_KEY_PAIR) - keys)
    return f"lacks {' and '.join(missing)} (it has: {', '.join(sorted(keys)) or 'no keys'})"


def s3_client(settings: Mapping[str, str] | None = None, *, quick: bool = False) -> Any:
    """The one way a boto3 S3 client is made.

    ``settings``: the standard AWS variables (a credentials Secret's data); None: the process environment and
    AWS config files (the stages, `spaceport run`, an operator with IRSA). ``quick``: two attempts and timeouts of
    seconds, for callers that must not hang (the operator reads progress inside reconcile passes).
    """
    import boto3
    from botocore.config import Config

    env = os.environ if settings is None else settings
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    style = env.get("AWS_S3_ADDRESSING_STYLE") or ("path" if endpoint else None)
    config = Config(s3={"addressing_style": style} if style else {},
                    retries={"mode": "standard", "max_attempts": 2} if quick else {"mode": "standard"},
                    **({"connect_timeout": 3, "read_timeout": 5} if quick else {}))
    if settings is None:
        return boto3.client("s3", config=config)  # boto3 reads the endpoint from the environment itself
    session = boto3.session.Session(
        aws_access_key_id=settings.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=settings.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=settings.get("AWS_SESSION_TOKEN"),
        region_name=settings.get("AWS_REGION") or settings.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


class S3Store(Store):
    def __init__(self, uri: str, client: Any | None = None) -> None:
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri!r} is not an s3:// URI")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket")
        self.bucket = bucket
        self.prefix = safe_key(prefix.strip("/"))
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def child(self, key: str) -> S3Store:
        return S3Store(f"s3://{self.bucket}/{self._key(key)}", self._client)

    def _wrap(self, err: Exception, key: str) -> StorageError:
        from botocore.exceptions import ClientError

        uri = self.uri_of(key)
        if isinstance(err, ClientError):
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFoundError(f"{uri} does not exist")
            if code == "NoSuchBucket":
                return NotFoundError(f"bucket {self.bucket!r} does not exist ({uri})")
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return StorageError(f"access to {uri} denied ({code}): check the credentials Secret")
            return StorageError(f"S3 error {code} on {uri}: {err}")
        return StorageError(f"cannot reach S3 for {uri}: {err}")

    def list(self, key: str = "") -> list[str]:
        base = self._key(key)
        prefix = base + "/" if base else ""
        keys = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(obj["Key"][len(prefix) :] for obj in page.get("Contents", []))
        except Exception as e:
            raise self._wrap(e, key) from e
        return sorted(k for k in keys if k and not k.endswith("/"))

    def folders(self, key: str = "") -> list[str]:
        base = self._key(key)
        prefix = base + "/" if base else ""
        names: set[str] = set()
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix,
                                                                          Delimiter="/")
            for page in pages:
                names.update(p["Prefix"][len(prefix):].strip("/") for p in page.get("CommonPrefixes", []))
        except Exception as e:
            raise self._wrap(e, key) from e
        return sorted(n for n in names if n)

    def list_sizes(self, key: str = "") -> dict[str, int]:
        base = self._key(key)
        prefix = base + "/" if base else ""
        sizes: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                sizes.update((obj["Key"][len(prefix):], int(obj["Size"])) for obj in page.get("Contents", []))
        except Exception as e:
            raise self._wrap(e, key) from e
        return {k: v for k, v in sorted(sizes.items()) if k and not k.endswith("/")}

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as e:
            raise self._wrap(e, key) from e

    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        extra = {"ContentType": content_type(key)}
        if not overwrite:
            extra["IfNoneMatch"] = "*"
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except Exception as e:
            if _is_precondition_failure(e):
                raise AlreadyExistsError(f"{self.uri_of(key)} exists; refusing to overwrite it") from e
            raise self._wrap(e, key) from e

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as e:
            err = self._wrap(e, key)
            if isinstance(err, NotFoundError) and "bucket" not in str(err):
                return False
            raise err from e

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except Exception as e:
            raise self._wrap(e, key) from e

    def upload_file(self, local: Path, key: str, progress: ProgressCallback | None = None) -> None:
        total = Path(local).stat().st_size
        callback = _ByteCounter(total, progress) if progress else None
        try:
            # Multipart uploads become visible only when completed: atomic for readers.
            self.client.upload_file(str(local), self.bucket, self._key(key), Callback=callback,
                                    ExtraArgs={"ContentType": content_type(key)})
        except Exception as e:
            raise self._wrap(e, key) from e

    def download_file(self, key: str, local: Path, progress: ProgressCallback | None = None) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        try:
            total = self.size(key) if progress else 0
            callback = _ByteCounter(total, progress) if progress else None
            self.client.download_file(self.bucket, self._key(key), str(tmp), Callback=callback)
            os.replace(tmp, local)
        except StorageError:
            raise
        except Exception as e:
            raise self._wrap(e, key) from e
        finally:
            tmp.unlink(missing_ok=True)


class _ByteCounter:
    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)


def _is_precondition_failure(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}
    return response.get("Error", {}).get("Code") in ("PreconditionFailed", "412")

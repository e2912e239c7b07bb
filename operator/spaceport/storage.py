"""The one place that talks to storage: ``s3://bucket/prefix`` (boto3) or a local/mounted path.

A :class:`Store` is rooted at a URI; every key is relative to that root and may not escape it.
Writes are atomic: a reader sees the old object or the whole new one, never half a file.

S3 settings come from the standard AWS environment and config files (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``…), so MinIO, Ceph and moto work unchanged. Addressing is
path-style when a custom endpoint is set, unless ``AWS_S3_ADDRESSING_STYLE`` says otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a transfer advances."""


class StorageError(Exception):
    """A storage operation failed; the message names the URI."""


class UnsafeKeyError(StorageError, ValueError):
    """A key would escape the store's root (``..``, an absolute path, a backslash)."""


class NotFoundError(StorageError, FileNotFoundError):
    pass


class AlreadyExistsError(StorageError, FileExistsError):
    pass


class UnwritableError(StorageError, PermissionError):
    """The location refuses writes for good (permissions, read-only, a file where a folder should be)."""


_PERMANENT_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def safe_key(key: str) -> str:
    """Normalise a relative key, refusing anything that could leave the root."""
    if key in ("", "."):
        return ""
    if "\\" in key or "\x00" in key:
        raise UnsafeKeyError(f"key {key!r} contains a backslash or NUL")
    if key.startswith("/"):
        raise UnsafeKeyError(f"key {key!r} is absolute; keys are relative to the store")
    parts = [p for p in PurePosixPath(key).parts if p != "."]
    if ".." in parts:
        raise UnsafeKeyError(f"key {key!r} contains '..'")
    return "/".join(parts)


def join_key(*keys: str) -> str:
    return "/".join(k for k in (safe_key(k) for k in keys) if k)


class Store(ABC):
    """Objects under one root URI."""

    uri: str

    @abstractmethod
    def child(self, key: str) -> Store:
        """A store rooted at ``key`` below this one."""

    @abstractmethod
    def list(self, key: str = "") -> list[str]:
        """All object keys under ``key`` (recursively), relative to this store, sorted."""

    def folders(self, key: str = "") -> list[str]:
        """Names of the folders directly under ``key`` (one delimited listing on S3, not every object)."""
        return sorted({k.split("/", 1)[0] for k in self.list(key) if "/" in k})

    def list_sizes(self, key: str = "") -> dict[str, int]:
        """``list`` with each object's size in bytes (one listing on S3, no per-object requests)."""
        return {k: self.size(join_key(key, k)) for k in self.list(key)}

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        """Write atomically. With ``overwrite=False`` an existing object raises AlreadyExistsError."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def upload_file(self, local: Path, key: str, progress: ProgressCallback | None = None) -> None: ...

    @abstractmethod
    def download_file(self, key: str, local: Path, progress: ProgressCallback | None = None) -> None: ...

    def local_path(self, key: str = "") -> Path | None:
        """The filesystem path of ``key`` when this store is local, else None."""
        return None

    def uri_of(self, key: str = "") -> str:
        k = safe_key(key)
        return self.uri.rstrip("/") + ("/" + k if k else "")

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_text(self, key: str, text: str, *, overwrite: bool = True) -> None:
        self.write_bytes(key, text.encode(), overwrite=overwrite)

    def upload_dir(self, local: Path, key: str = "", progress: ProgressCallback | None = None) -> list[str]:
        """Copy every file under ``local`` to ``key``; returns the keys written."""
        files = sorted(p for p in Path(local).rglob("*") if p.is_file())
        total = sum(p.stat().st_size for p in files)
        done = 0
        written = []
        for path in files:
            rel = join_key(key, path.relative_to(local).as_posix())
            self.upload_file(path, rel)
            done += path.stat().st_size
            written.append(rel)
            if progress:
                progress(done, total)
        return written

    def download_dir(self, key: str, local: Path, progress: ProgressCallback | None = None) -> list[Path]:
        """Copy every object under ``key`` into ``local``; returns the local paths."""
        keys = self.list(key)
        sizes = [self.size(join_key(key, k)) for k in keys]
        total, done, paths = sum(sizes), 0, []
        for rel, size in zip(keys, sizes, strict=True):
            target = Path(local) / rel
            self.download_file(join_key(key, rel), target)
            paths.append(target)
            done += size
            if progress:
                progress(done, total)
        return paths


class LocalStore(Store):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key) if safe_key(key) else self.root

    def child(self, key: str) -> LocalStore:
        return LocalStore(self._path(key))

    def local_path(self, key: str = "") -> Path:
        return self._path(key)

    def list(self, key: str = "") -> list[str]:
        base = self._path(key)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as e:
            raise NotFoundError(f"{path} does not exist") from e
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror}") from e

    def write_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        path = self._path(key)
        with self._atomic(path, overwrite) as tmp:
            tmp.write_bytes(data)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def upload_file(self, local: Path, key: str, progress: ProgressCallback | None = None) -> None:
        path = self._path(key)
        if Path(local).resolve() == path:
            return
        with self._atomic(path, overwrite=True) as tmp:
            shutil.copyfile(local, tmp)
        if progress:
            progress(path.stat().st_size, path.stat().st_size)

    def download_file(self, key: str, local: Path, progress: ProgressCallback | None = None) -> None:
        src = self._path(key)
        if not src.is_file():
            raise NotFoundError(f"{src} does not exist")
        LocalStore(Path(local).parent).upload_file(src, Path(local).name, progress)

    class _atomic:
        def __init__(self, path: Path, overwrite: bool) -> None:
            self.path, self.overwrite = path, overwrite

        def __enter__(self) -> Path:
            if not self.overwrite and self.path.exists():
                raise AlreadyExistsError(f"{self.path} exists; refusing to overwrite it")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
            except OSError as e:
                kind = UnwritableError if e.errno in _PERMANENT_WRITE_ERRNOS else StorageError
                raise kind(f"cannot write under {self.path.parent}: {e.strerror}") from e
            os.close(fd)
            self.tmp = Path(name)
            return self.tmp

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            if exc_type is not None:
                self.tmp.unlink(missing_ok=True)
                return
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            if not self.overwrite and self.path.exists():
                self.tmp.unlink(missing_ok=True)
                raise AlreadyExistsError(f"{self.path} exists; refusing to overwrite it")
            os.replace(self.tmp, self.path)


def content_type(key: str) -> str:
    """The Content-Type S3 serves an object with: a bucket served as a website shows the viewer page."""
    import mimetypes

    if key.endswith(".js"):
        return "text/javascript"
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def s3_client() -> Any:
    """A boto3 S3 client configured from the standard AWS environment."""
    import boto3
    from botocore.config import Config

    style = os.environ.get("AWS_S3_ADDRESSING_STYLE")
    if not style and (os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")):
        style = "path"
    config = Config(s3={"addressing_style": style} if style else {}, retries={"mode": "standard"})
    return boto3.client("s3", config=config)


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


def open_store(uri: str | Path) -> Store:
    """A store for ``s3://bucket/prefix`` or a filesystem path."""
    text = str(uri)
    if text.startswith("s3://"):
        return S3Store(text)
    if "://" in text:
        raise StorageError(f"unsupported storage URI {text!r}: use s3://bucket/prefix or a path")
    return LocalStore(text)


def iter_files(store: Store, key: str = "", suffixes: tuple[str, ...] = ()) -> Iterator[str]:
    """Keys under ``key`` whose names end with one of ``suffixes`` (case-insensitive)."""
    for k in store.list(key):
        if not suffixes or k.lower().endswith(suffixes):
            yield k

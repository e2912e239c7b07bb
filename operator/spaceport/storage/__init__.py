"""The one place that talks to storage: ``s3://bucket/prefix`` (boto3) or a local/mounted path.

A :class:`Store` is rooted at a URI; every key is relative to that root and may not escape it.
Writes are atomic: a reader sees the old object or the whole new one, never half a file.

Modules: ``base`` (the Store interface, keys, errors), ``local`` (filesystem), ``s3`` (the one factory of S3
clients, and the S3 store).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from spaceport.storage.base import (
    AlreadyExistsError,
    NotFoundError,
    ProgressCallback,
    StorageError,
    Store,
    UnsafeKeyError,
    UnwritableError,
    join_key,
    safe_key,
)
from spaceport.storage.local import LocalStore
from spaceport.storage.s3 import S3Store, content_type, credentials_problem, s3_client


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


__all__ = ["AlreadyExistsError", "LocalStore", "NotFoundError", "ProgressCallback", "S3Store", "StorageError",
           "Store", "UnsafeKeyError", "UnwritableError", "content_type", "credentials_problem", "iter_files",
           "join_key", "open_store", "s3_client", "safe_key"]

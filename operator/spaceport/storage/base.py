"""The Store interface, its keys and its errors. A store is rooted at a URI; no key may escape that root."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path, PurePosixPath

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

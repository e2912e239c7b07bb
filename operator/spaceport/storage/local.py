"""A store on the local (or a mounted) filesystem: writes go to a temp file renamed into place."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from spaceport.storage.base import (
    AlreadyExistsError,
    NotFoundError,
    ProgressCallback,
    StorageError,
    Store,
    UnwritableError,
    safe_key,
)

_PERMANENT_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


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

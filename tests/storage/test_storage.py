"""Storage over a real filesystem and a real S3 endpoint (moto server over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spaceport.storage import (
    AlreadyExistsError,
    LocalStore,
    NotFoundError,
    S3Store,
    StorageError,
    Store,
    UnsafeKeyError,
    open_store,
    safe_key,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "root")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/some/prefix")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a\\b", "a/../b"])
def test_keys_that_escape_are_refused(key: str) -> None:
    with pytest.raises(UnsafeKeyError, match="key"):
        safe_key(key)


def test_safe_key_normalises() -> None:
    assert safe_key("a/./b//c") == "a/b/c"
    assert safe_key("") == ""


def test_write_read_list_exists(store: Store) -> None:
    store.write_text("a/b.txt", "hello")
    store.write_bytes("c.bin", b"\x00\x01")
    assert store.read_text("a/b.txt") == "hello"
    assert store.exists("c.bin") and not store.exists("nope")
    assert store.list() == ["a/b.txt", "c.bin"]
    assert store.list("a") == ["b.txt"]
    assert store.size("c.bin") == 2
    assert store.child("a").read_text("b.txt") == "hello"
    assert store.uri_of("a/b.txt").endswith("/a/b.txt")
    with pytest.raises(UnsafeKeyError):
        store.read_bytes("../outside")


def test_missing_object_names_the_uri(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"missing\.txt"):
        store.read_bytes("missing.txt")


def test_no_overwrite_refuses_existing(store: Store) -> None:
    store.write_text("result.json", "first")
    with pytest.raises(AlreadyExistsError, match=r"result\.json"):
        store.write_text("result.json", "second", overwrite=False)
    assert store.read_text("result.json") == "first"


def test_folder_upload_and_download_report_progress(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "one.bin").write_bytes(b"1" * 1000)
    (src / "sub" / "two.bin").write_bytes(b"2" * 3000)
    seen: list[tuple[int, int]] = []
    written = store.upload_dir(src, "up", progress=lambda d, t: seen.append((d, t)))
    assert written == ["up/one.bin", "up/sub/two.bin"]
    assert seen[-1] == (4000, 4000)
    seen.clear()
    paths = store.download_dir("up", tmp_path / "dst", progress=lambda d, t: seen.append((d, t)))
    assert sorted(p.relative_to(tmp_path / "dst").as_posix() for p in paths) == ["one.bin", "sub/two.bin"]
    assert (tmp_path / "dst" / "sub" / "two.bin").read_bytes() == b"2" * 3000
    assert seen[-1] == (4000, 4000)


def test_local_write_is_atomic_on_failure(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_text("f.txt", "old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), LocalStore._atomic(tmp_path / "f.txt", overwrite=True) as tmp:
        tmp.write_text("half")
        raise Boom
    assert store.read_text("f.txt") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_unwritable_local_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot write under"):
        LocalStore(blocker).write_text("a.txt", "x")


def test_s3_missing_bucket_and_bad_credentials(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotFoundError, match="bucket 'no-such-bucket' does not exist"):
        S3Store("s3://no-such-bucket/x").list()
    with pytest.raises(ValueError, match="names no bucket"):
        S3Store("s3:///x")
    with pytest.raises(StorageError, match="unsupported storage URI"):
        open_store("gs://bucket/x")


def test_s3_uses_path_style_with_custom_endpoint(s3_bucket: str) -> None:
    store = S3Store(f"s3://{s3_bucket}/p")
    assert store.client.meta.config.s3["addressing_style"] == "path"
    store.write_text("k", "v")
    assert store.read_text("k") == "v"


def test_folders_and_sizes_in_one_listing(store: Store) -> None:
    store.write_bytes("runs/1/sfm/result.json", b"{}")
    store.write_bytes("runs/12/train/splats.ply", b"12345")
    store.write_bytes("runs/owner.json", b"x")
    store.write_bytes("runsx/3/a", b"x")
    assert store.folders("runs") == ["1", "12"]
    assert store.folders("nothing") == []
    assert store.list_sizes("runs/12") == {"train/splats.ply": 5}

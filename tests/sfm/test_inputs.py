"""Reading photos: orientation, downscaling, EXIF GPS and focal length, capture order."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spaceport.stages.sfm.inputs import Photo, find_images, is_ordered, prepare_photo
from spaceport.storage import LocalStore


def _jpeg(path: Path, size: tuple[int, int], exif: Image.Exif) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize(size).save(path, "JPEG", exif=exif)


def test_orientation_downscale_and_exif(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "DJI", "FC6310", 6  # stored sideways: rotate 90 degrees to view
    exif.get_ifd(0x8769)[0xA405] = 24
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "S", (33.0, 51.0, 54.0), "W", (70.0, 30.0, 0.0)
    gps[5], gps[6] = b"\x00", 512.25
    _jpeg(tmp_path / "DJI_0001.JPG", (1600, 1200), exif)
    photo = prepare_photo(LocalStore(tmp_path), "DJI_0001.JPG", tmp_path / "out" / "DJI_0001.JPG", 400)
    assert (photo.width, photo.height) == (300, 400) and photo.original_size == (1200, 1600)  # upright
    assert Image.open(tmp_path / "out" / "DJI_0001.JPG").size == (300, 400)
    assert photo.gps is not None and photo.gps.lla == pytest.approx((-(33 + 51 / 60 + 54 / 3600), -70.5, 512.25))
    assert (photo.make, photo.model) == ("DJI", "FC6310")
    assert photo.focal is not None and photo.focal.source == "35mm"
    assert photo.focal_px == pytest.approx(24 / 43.267 * 500)


def test_sixteen_bit_png_and_missing_exif(tmp_path: Path) -> None:
    ramp = (np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "scan.PNG")
    photo = prepare_photo(LocalStore(tmp_path), "scan.PNG", tmp_path / "out" / "scan.PNG", 1600)
    out = np.asarray(Image.open(tmp_path / "out" / "scan.PNG"))
    assert out.shape == (64, 96, 3) and out.max() == 255 and out.min() == 0
    assert photo.gps is None and photo.focal_px is None


def test_unreadable_files_raise(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 100)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:300])
    (tmp_path / "tiny.png").write_bytes(b"")
    Image.new("RGB", (20, 20)).save(tmp_path / "icon.png")
    for name in ("cut.jpg", "tiny.png", "icon.png"):
        with pytest.raises((OSError, ValueError)):
            prepare_photo(LocalStore(tmp_path), name, tmp_path / "out" / name, 1600)


def test_find_images_is_recursive_and_case_blind(tmp_path: Path) -> None:
    for name in ("a/1.JPG", "a/b/2.jpeg", "3.Tif", "4.png", "notes.txt", ".thumbs/5.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert find_images(LocalStore(tmp_path)) == ["3.Tif", "4.png", "a/1.JPG", "a/b/2.jpeg"]


def _photo(name: str, taken: datetime | None) -> Photo:
    return Photo(name, 10, 10, (10, 10), "", "", None, None, taken)


def test_capture_order() -> None:
    t = [datetime(2026, 1, 1, 10, 0, s) for s in (0, 2, 4)]
    assert is_ordered([_photo("c.jpg", t[2]), _photo("a.jpg", t[0]), _photo("b.jpg", t[1])])
    assert not is_ordered([_photo("c.jpg", t[0]), _photo("a.jpg", t[1]), _photo("b.jpg", t[2])])
    assert is_ordered([_photo("DJI_0001.JPG", None), _photo("DJI_0002.JPG", None)])
    assert not is_ordered([_photo("north.jpg", None), _photo("south.jpg", None)])

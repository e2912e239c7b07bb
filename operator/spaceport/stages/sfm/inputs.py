"""Finding, decoding and downscaling the input photos, and reading what their EXIF says about the camera.

Each usable photo is written to the scratch folder under its key (the name COLMAP and training use),
upright (EXIF orientation applied) and no larger than ``max_image_size``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from spaceport.stages.cpus import usable_cpus
from spaceport.stages.sfm import exif as exif_tags
from spaceport.stages.sfm.exif import FocalPrior, GpsTag
from spaceport.storage import Store

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MIN_SIDE = 32
"""Photos smaller than this (pixels) cannot give SIFT features: they are skipped with a warning."""


@dataclass(frozen=True)
class Photo:
    """One usable photo, as prepared for SfM."""

    name: str  # key under the input store; also the image name in the model
    width: int  # after orientation and downscaling
    height: int
    original_size: tuple[int, int]  # as decoded, upright
    make: str
    model: str
    focal: FocalPrior | None
    gps: GpsTag | None
    taken: datetime | None

    @property
    def focal_px(self) -> float | None:
        """Focal length prior in pixels of the prepared image, from the EXIF tags (see exif.focal_prior)."""
        return self.focal.pixels(self.width, self.height) if self.focal is not None else None

    @property
    def camera_key(self) -> tuple:
        """Photos with equal keys share one set of intrinsics: same camera, same frame (a crop or another
        resolution of the sensor, and portrait against landscape, get their own), same focal prior."""
        fraction = round(self.focal.fraction, 4) if self.focal is not None else None
        return (self.make, self.model, self.original_size, self.width, self.height, fraction)


def find_images(store: Store) -> list[str]:
    return [k for k in store.list() if k.lower().endswith(IMAGE_SUFFIXES) and not _hidden(k)]


def _hidden(key: str) -> bool:
    return any(part.startswith(".") for part in key.split("/"))


def _taken(exif: Image.Exif) -> datetime | None:
    text = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
    try:
        return datetime.strptime(str(text).strip("\x00 "), "%Y:%m:%d %H:%M:%S") if text else None
    except ValueError:
        return None


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale (some TIFF exports): keep the top 8 bits rather than clipping at 255.
        a = np.asarray(im, np.float32)
        return Image.fromarray((a / max(float(a.max()), 1.0) * 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def prepare_photo(store: Store, key: str, target: Path, max_size: int) -> Photo:
    """Decode ``key``, apply its EXIF orientation, downscale and write it to ``target``.

    Raises ValueError (or OSError from Pillow) when the file cannot be used.
    """
    local = store.local_path(key)
    src = Image.open(local if local is not None else io.BytesIO(store.read_bytes(key)))
    exif = src.getexif()
    stored = src.size
    xmp = src.info.get("xmp", b"")
    if src.format == "JPEG" and max(stored) > 2 * max_size:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (never below the target): 48 MP photos decode ~8x faster.
        src.draft("RGB", (stored[0] * max_size // max(stored), stored[1] * max_size // max(stored)))
    src.load()  # decode now: truncated or corrupt files fail here
    im = _to_rgb(ImageOps.exif_transpose(src))
    original = stored if (im.width >= im.height) == (stored[0] >= stored[1]) else (stored[1], stored[0])
    if min(im.size) < MIN_SIDE:
        raise ValueError(f"{im.size[0]}x{im.size[1]} pixels is too small")
    scale = max_size / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        im.save(target, "JPEG", quality=95)
    elif suffix == ".png":
        im.save(target, "PNG", compress_level=1)
    else:
        im.save(target, "TIFF")
    make = str(exif.get(0x010F, "")).strip("\x00 ")
    model = str(exif.get(0x0110, "")).strip("\x00 ")
    gps = exif_tags.gps_tag(exif, xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else str(xmp))
    return Photo(key, im.width, im.height, original, make, model,
                 exif_tags.focal_prior(exif, make, model, stored), gps, _taken(exif))


def prepare_photos(
    store: Store, keys: list[str], folder: Path, max_size: int, on_done: Callable[[int, int], None] | None = None
) -> tuple[list[Photo], dict[str, str]]:
    """Prepare every photo in parallel; returns the usable ones (in key order) and why the others failed."""
    photos: list[Photo] = []
    failed: dict[str, str] = {}

    def one(key: str) -> Photo | str:
        try:
            return prepare_photo(store, key, folder / key, max_size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            (folder / key).unlink(missing_ok=True)
            return str(e) or type(e).__name__

    # Decoding and resizing release the GIL; more threads than cores also hide S3 latency.
    with ThreadPoolExecutor(max_workers=min(16, 2 * usable_cpus())) as pool:
        for i, (key, result) in enumerate(zip(keys, pool.map(one, keys), strict=True)):
            if isinstance(result, Photo):
                photos.append(result)
            else:
                failed[key] = result
            if on_done:
                on_done(i + 1, len(keys))
    return photos, failed


def is_ordered(photos: list[Photo]) -> bool:
    """Whether name order is capture order: timestamps that never go back, or numbered names."""
    times = [p.taken for p in sorted(photos, key=lambda p: p.name)]  # COLMAP pairs sequences by name
    if all(t is not None for t in times):
        return all(a <= b for a, b in pairwise(times))  # type: ignore[operator]
    numbers = [re.search(r"(\d+)\D*$", p.name) for p in photos]
    return all(numbers)

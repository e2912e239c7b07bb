"""Loading the SfM stage's output: the COLMAP model in ``sparse/`` and the images in ``images/``."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spaceport.api.stages import SFM
from spaceport.contract import BadInputError
from spaceport.stages.train.render import Camera
from spaceport.storage import Store

MODEL_FILES = SFM.files.model
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")


@dataclass
class View:
    camera: Camera
    image: torch.Tensor  # [H, W, 3] uint8; converted per step to keep memory at a quarter


@dataclass
class Dataset:
    views: list[View]
    points: np.ndarray  # [P, 3] float64
    colors: np.ndarray  # [P, 3] float32, 0..1
    georef: bytes | None
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    """Per image name, the indices into ``points`` of the SfM points that image observed (its tracks)."""

    @property
    def train(self) -> list[View]:
        return [v for v in self.views if not v.camera.held_out]

    @property
    def held_out(self) -> list[View]:
        return [v for v in self.views if v.camera.held_out]


def local_input(store: Store, scratch: Path) -> Path:
    """The input folder on disk: the store itself when local, else a download of what training reads."""
    root = store.local_path()
    if root is not None:
        return root
    target = scratch / "input"
    for key in (SFM.files.sparse, SFM.files.images):
        store.download_dir(key, target / key)
    for key in (SFM.files.georef, SFM.files.photos):
        if store.exists(key):
            store.download_file(key, target / key)
    return target


def training_scale(width: int, height: int, downscale: float, max_image_size: int | None) -> float:
    """Factor from the SfM image size to the training size: ``1 / downscale``, and no larger than brings
    the longest side to ``max_image_size``."""
    factor = 1.0 / downscale
    if max_image_size is not None and max(width, height) * factor > max_image_size:
        factor = max_image_size / max(width, height)
    return factor


def read_photo(path: Path, width: int, height: int) -> np.ndarray:
    """The image at ``path`` as ``[height, width, 3]`` uint8, never decoded at a size much above that.

    A JPEG is decoded reduced (DCT scaling by 1/2, 1/4 or 1/8, to the smallest size still at least the
    target), so a 4000x3000 photo trained at 1000x750 costs a 1000x750 decode, not 36 MB of pixels; the
    rest of the way is a Lanczos resize. Raises ``OSError`` when the file cannot be read.
    """
    from PIL import Image

    with Image.open(path) as img:
        if img.size != (width, height):
            img.draft("RGB", (width, height))  # JPEG only; a no-op for other formats
        rgb = img.convert("RGB")
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
        return np.asarray(rgb, np.uint8).copy()


@dataclass
class Model:
    """The SfM model as training sees it, before any pixel is read: cameras at the training size (held-out ones
    marked, every ``holdout_every``-th by name over the whole model), SfM points and which image saw which."""

    cameras: list[Camera]
    points: np.ndarray  # [P, 3] float64
    colors: np.ndarray  # [P, 3] float32, 0..1
    georef: bytes | None
    observed: dict[str, np.ndarray]
    photos: Path
    """The folder of the undistorted images."""
    store: Store

    def select(self, cameras: np.ndarray, points: np.ndarray) -> Model:
        """The model restricted to the cameras and points where the masks are True (point indices remapped in
        ``observed``; a camera's observations of points left out are dropped)."""
        remap = np.full(len(self.points), -1, np.int64)
        remap[points] = np.arange(int(points.sum()))
        kept = [c for c, keep in zip(self.cameras, cameras, strict=True) if keep]
        observed = {c.name: remap[self.observed[c.name]] for c in kept}
        return Model(kept, self.points[points], self.colors[points], self.georef,
                     {name: ids[ids >= 0] for name, ids in observed.items()}, self.photos, self.store)


def load_model(store: Store, scratch: Path, *, holdout_every: int, downscale: float,
               max_image_size: int | None = None) -> Model:
    """The SfM model in ``store`` (downloaded into ``scratch`` when remote); clear errors for a broken one."""
    import pycolmap

    root = local_input(store, scratch)
    sparse, photos, georef_file = SFM.files.sparse, SFM.files.images, SFM.files.georef
    for name in MODEL_FILES:
        path = root / sparse / name
        if not path.is_file() or path.stat().st_size == 0:
            raise BadInputError(f"SfM model file {store.uri_of(f'{sparse}/{name}')} is missing or empty")
    try:
        rec = pycolmap.Reconstruction(str(root / sparse))
    except Exception as e:
        raise BadInputError(f"{store.uri_of(sparse)}: not a readable COLMAP model ({e})") from e
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not images:
        raise BadInputError(f"{store.uri_of(f'{sparse}/{MODEL_FILES[1]}')}: no registered images")
    if rec.num_points3D() == 0:
        raise BadInputError(f"{store.uri_of(f'{sparse}/{MODEL_FILES[2]}')}: no 3D points to start from")
    # With one or two images, holding one out would leave too little to train on.
    hold = holdout_every if holdout_every > 0 and len(images) >= 3 else 0
    place = photo_places(root / SFM.files.photos, [im.name for im in images], store.uri_of(SFM.files.photos))
    cameras = []
    for im in images:
        cam = im.camera
        if cam.model.name not in PINHOLE_MODELS:
            raise BadInputError(f"{store.uri_of(f'{sparse}/{MODEL_FILES[0]}')}: camera {cam.camera_id} is "
                                f"{cam.model.name}; training needs undistorted PINHOLE cameras")
        world_to_camera = np.vstack([np.asarray(im.cam_from_world().matrix(), np.float64), [0, 0, 0, 1]])
        camera = Camera(im.name, cam.width, cam.height, float(cam.focal_length_x), float(cam.focal_length_y),
                        float(cam.principal_point_x), float(cam.principal_point_y), world_to_camera,
                        held_out=hold > 0 and place[im.name] % hold == 0)
        factor = training_scale(camera.width, camera.height, downscale, max_image_size)
        cameras.append(camera.scaled(factor) if factor < 1 else camera)
    ids = list(rec.points3D.keys())
    points = np.array([rec.points3D[i].xyz for i in ids], np.float64).reshape(-1, 3)
    colors = np.array([rec.points3D[i].color for i in ids], np.float32).reshape(-1, 3) / 255.0
    georef = (root / georef_file).read_bytes() if (root / georef_file).is_file() else None
    return Model(cameras, points, colors, georef, observations(images, ids), root / photos, store)


def photo_places(listing: Path, registered: list[str], where: str) -> dict[str, int]:
    """Each registered photo's place among all the photos SfM used (its ``photos.json``), or among the registered
    ones for a model written without that list (or one that does not name them all)."""
    if listing.is_file():
        try:
            names = json.loads(listing.read_text())
        except ValueError as e:
            raise BadInputError(f"{where}: not a JSON list of photo names ({e})") from e
        place = {name: i for i, name in enumerate(names)} if isinstance(names, list) else {}
        if all(name in place for name in registered):
            return place
    return {name: i for i, name in enumerate(registered)}


def load_views(model: Model, cameras: list[Camera] | None = None) -> list[View]:
    """The photos of ``cameras`` (default: all the model's) at their training size."""
    views = []
    for camera in model.cameras if cameras is None else cameras:
        path = model.photos / camera.name
        where = model.store.uri_of(f"{SFM.files.images}/{camera.name}")
        if not path.is_file():
            raise BadInputError(f"image {where} named in the SfM model is missing")
        try:
            views.append(View(camera, torch.from_numpy(read_photo(path, camera.width, camera.height))))
        except OSError as e:
            raise BadInputError(f"image {where} cannot be read ({e})") from e
    return views


def dataset_of(model: Model) -> Dataset:
    """The model with every photo it names loaded."""
    return Dataset(load_views(model), model.points, model.colors, model.georef, model.observed)


def png_bytes(pixels: np.ndarray) -> bytes:
    """``[H, W, 3]`` uint8 pixels as a PNG file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def load_dataset(store: Store, scratch: Path, *, holdout_every: int, downscale: float,
                 max_image_size: int | None = None) -> Dataset:
    return dataset_of(load_model(store, scratch, holdout_every=holdout_every, downscale=downscale,
                                 max_image_size=max_image_size))


def observations(images: list[Any], point_ids: list[int]) -> dict[str, np.ndarray]:
    """Per pycolmap image, the indices in ``point_ids`` of the 3D points it observed."""
    index = {pid: i for i, pid in enumerate(point_ids)}
    return {im.name: np.array([index[p.point3D_id] for p in im.points2D if p.has_point3D()], np.int64)
            for im in images}

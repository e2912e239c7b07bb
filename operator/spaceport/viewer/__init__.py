"""A static web viewer next to every compressed scene: PlayCanvas's supersplat-viewer opening our `.sog`, or
streaming our streamed SOG (``lod/lod-meta.json``) when the compress stage wrote one.

``write_viewer(store)`` puts into a compress output folder::

    index.html     our page (page.py): the viewer plus a metrics panel
    index.js/.css  the viewer, copied from node_modules/@playcanvas/supersplat-viewer/public
    settings.json  the viewer's settings, with a start camera that frames the scene (framing.py)
    metrics.json   metrics of the run so far (the page also reads the stage's result.json)
    georef.json    copied from the training output when the scene is georeferenced

Nothing is fetched from a CDN; all URLs are relative, so the folder can be served from anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spaceport.api import COMPRESS, TRAIN
from spaceport.api.stages import RESULT_FILE
from spaceport.layout import merge_metrics
from spaceport.storage import Store, open_store
from spaceport.viewer.framing import StartView, choose_start, entity_rotation
from spaceport.viewer.page import render_page
from spaceport.viewer.settings import ViewPose, settings_json

ASSETS_ENV = "SPACEPORT_VIEWER_ASSETS"
"""Folder holding the viewer's index.js and index.css (the npm package's ``public/``)."""

PACKAGE = "@playcanvas/supersplat-viewer"
ASSET_FILES = ("index.js", "index.css")
PAGE_FILES = (COMPRESS.files.viewer, COMPRESS.files.viewer_settings, COMPRESS.files.viewer_metrics, *ASSET_FILES)
STREAMED_INDEX = f"{COMPRESS.files.streamed}/{COMPRESS.files.lod_meta}"
"""The streamed SOG's index in a compress output folder, which the page streams when it is there."""
REPO_ASSETS = Path(__file__).resolve().parents[3] / "node_modules" / PACKAGE / "public"
"""Where `npm ci` in a source checkout puts the viewer."""


class ViewerAssetsNotFound(FileNotFoundError):
    """The viewer's JavaScript is not installed where we look for it."""


def find_assets(explicit: str | Path | None = None) -> Path:
    """The folder with the viewer's built files: $SPACEPORT_VIEWER_ASSETS, else node_modules near us."""
    candidates = [explicit, os.environ.get(ASSETS_ENV), REPO_ASSETS, Path.cwd() / "node_modules" / PACKAGE / "public"]
    for c in candidates:
        if c and all((Path(c) / f).is_file() for f in ASSET_FILES):
            return Path(c)
    raise ViewerAssetsNotFound(
        f"the viewer's {' and '.join(ASSET_FILES)} were not found: run `npm ci` in the repository "
        f"(installs {PACKAGE}) or set {ASSETS_ENV} to its public/ folder"
    )


def viewer_version(assets: Path) -> str | None:
    try:
        return json.loads((assets.parent / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _read_json(store: Store | None, key: str) -> Any:
    if store is None or not store.exists(key):
        return None
    try:
        return json.loads(store.read_text(key))
    except ValueError:
        return None


def scene_file(store: Store) -> str | None:
    """The scene a compress output folder's page shows: its streamed SOG when it has one, else scene.sog."""
    return next((key for key in (STREAMED_INDEX, COMPRESS.files.sog) if store.exists(key)), None)


def start_pose(cameras: list[dict[str, Any]], means: np.ndarray | None = None,
               scene_rotation: np.ndarray | None = None, georef: dict[str, Any] | None = None) -> ViewPose | None:
    """The start camera (viewer world) for trained cameras (cameras.json entries): see framing.py.

    ``scene_rotation`` (3x3) is how the .sog's coordinates relate to the cameras' world
    (sog = R · world), for a compress stage that turns scenes itself.
    """
    return choose_start(cameras, means, georef, scene_rotation).pose


def write_viewer(
    target: Store | str | Path,
    sog_name: str = COMPRESS.files.sog,
    *,
    metrics: Mapping[str, Any] | None = None,
    source: Store | None = None,
    means: np.ndarray | None = None,
    scene_rotation: np.ndarray | None = None,
    durations: Mapping[str, float] | None = None,
    title: str = "Spaceport reconstruction",
    assets: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Write the viewer page next to ``sog_name`` (a .sog, or a streamed SOG's lod-meta.json, relative to the
    folder) in ``target``; returns ``{"viewer": URI of index.html}``.

    ``source`` is the training output (the compress stage's input): its cameras.json and georef.json give
    the start view and the up axis the viewer orbits about (framing.py), georef.json is copied, its
    result.json's metrics are shown. ``means`` (the splat centres) frame the scene and place the orbit
    point on it; ``metrics`` (camelCase) are shown beside the training ones
    (training's win on a shared key such as ``ssim``).
    ``scene_rotation``: see :func:`start_pose` (only when the .sog is turned relative to cameras.json).
    Without the viewer's assets this raises :class:`ViewerAssetsNotFound`, or, when ``warn`` is given,
    reports it there and returns ``{}`` (a compressed scene is still worth keeping without a page).
    """
    store = target if isinstance(target, Store) else open_store(target)
    try:
        asset_dir = find_assets(assets)
    except ViewerAssetsNotFound as e:
        if warn is None:
            raise
        warn(f"no viewer page written: {e}")
        return {}
    cameras = (_read_json(source, TRAIN.files.cameras) or {}).get("cameras", [])
    georef = _read_json(source, TRAIN.files.georef)
    upstream = _read_json(source, RESULT_FILE) or {}
    shown = merge_metrics([upstream.get("metrics", {}), metrics or {}])  # the earlier stage owns a shared key
    times = dict(durations or {})
    if "durationSeconds" in upstream and upstream.get("stage"):
        times.setdefault(upstream["stage"], upstream["durationSeconds"])

    info: dict[str, Any] = {"title": title, "scene": sog_name, "metrics": shown, "durations": times,
                            "viewer": {"package": PACKAGE, "version": viewer_version(asset_dir)}}
    if georef:
        info["georef"] = georef
        store.write_text(COMPRESS.files.georef, json.dumps(georef, indent=1))
    for name in ASSET_FILES:
        store.upload_file(asset_dir / name, name)
    start: StartView = choose_start(cameras, means, georef, scene_rotation)
    info["view"] = {"start": start.kind, "turned": start.turn is not None}
    store.write_text(COMPRESS.files.viewer_settings, json.dumps(settings_json(start.pose), indent=1))
    store.write_text(COMPRESS.files.viewer_metrics, json.dumps(info, indent=1, default=_plain))
    # The page goes last: a folder with index.html has everything the page needs.
    rotation = None if start.turn is None else entity_rotation(start.turn)
    store.write_text(COMPRESS.files.viewer, render_page(sog_name, title, rotation))
    return {"viewer": store.uri_of(COMPRESS.files.viewer)}


def update_metrics(store: Store, metrics: Mapping[str, Any], durations: Mapping[str, float] | None = None) -> None:
    """Merge the whole run's metrics into an existing viewer's metrics.json (after the last stage)."""
    info = _read_json(store, COMPRESS.files.viewer_metrics)
    if info is None:
        return
    info["metrics"] = merge_metrics([metrics, info.get("metrics", {})])  # the run's merged metrics come first
    info["durations"] = {**info.get("durations", {}), **(durations or {})}
    store.write_text(COMPRESS.files.viewer_metrics, json.dumps(info, indent=1, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["ASSETS_ENV", "PAGE_FILES", "STREAMED_INDEX", "ViewPose", "ViewerAssetsNotFound", "find_assets",
           "scene_file", "start_pose", "update_metrics", "write_viewer"]

"""Compression stage: the trained ``splats.ply`` → PlayCanvas SOG v2 (bundled and unbundled), SOGS v1, and
the streamed, level-of-detail SOG for large scenes.

Input (the train output folder): ``splats.ply``, ``cameras.json`` (for the quality renders), and
``georef.json`` when the scene is georeferenced. Output: ``scene.sog``, ``sog/`` (meta.json + WebPs),
``sogs-v1/`` when asked, ``lod/`` (lod-meta.json + one unbundled SOG per chunk) when the scene is streamed.
Everything is built in scratch and uploaded file by file (each upload is atomic), so a failure never leaves a
partial ``.sog``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from spaceport.api.compress import CompressOptions
from spaceport.api.stages import COMPRESS, TRAIN
from spaceport.cameras import Camera, load_cameras
from spaceport.contract import BadInputError, ProgressReporter, StageContext, StageOutput
from spaceport.splats import GaussianScene, PlyFormatError, read_ply
from spaceport.stages.compress.pipeline import Encoded, encode_scene, keep_bands, resolve_device, wants_streamed
from spaceport.stages.compress.sog import META, bundle, decode_v2
from spaceport.storage import Store

# The quality renders (training's renderer, TRAIN.renderer: torch and numba, ~3 CPU-seconds to import) are
# imported only when a run measures quality: encoding alone needs neither.

PLY = TRAIN.files.ply
CAMERAS = TRAIN.files.cameras
GEOREF = TRAIN.files.georef
HOLDOUT = TRAIN.files.holdout
OUT = COMPRESS.files
GEOREF_FIELDS = ("latitude", "longitude", "altitude")


def _find_ply(store: Store) -> str:
    if store.exists(PLY):
        return PLY
    plys = [k for k in store.list() if k.endswith(".ply") and "/" not in k]
    if len(plys) == 1:
        return plys[0]
    raise BadInputError(f"{store.uri_of(PLY)} does not exist" + (f" (found {', '.join(plys)})" if plys else ""))


def _local_copy(store: Store, key: str, scratch: Path) -> Path:
    local = store.local_path(key)
    if local is not None:
        return local
    target = scratch / "input" / key
    store.download_file(key, target)
    return target


def read_scene(store: Store, scratch: Path) -> tuple[GaussianScene, int, int, str]:
    """(finite scene, PLY bytes, non-finite splats dropped, key) — bad files become BadInputError."""
    key = _find_ply(store)
    path = _local_copy(store, key, scratch)
    try:
        scene = read_ply(path, name=store.uri_of(key))
    except PlyFormatError as e:
        raise BadInputError(str(e)) from e
    if scene.count == 0:
        raise BadInputError(f"{store.uri_of(key)}: no splats")
    finite = scene.finite_mask()
    dropped = int((~finite).sum())
    if dropped:
        scene = scene.subset(finite)
    if scene.count == 0:
        raise BadInputError(f"{store.uri_of(key)}: no splats" + (f" ({dropped} non-finite dropped)" if dropped else ""))
    return scene, path.stat().st_size, dropped, key


def read_georef(store: Store) -> dict[str, Any] | None:
    if not store.exists(GEOREF):
        return None
    try:
        data = json.loads(store.read_text(GEOREF))
        ref = {f: float(data[f]) for f in GEOREF_FIELDS}
    except (ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{store.uri_of(GEOREF)}: needs numeric latitude, longitude, altitude ({e})") from e
    ref["frame"] = str(data.get("frame", "ENU"))
    return ref


def load_views(store: Store) -> list[Camera]:
    if not store.exists(CAMERAS):
        return []
    return load_cameras(store)


def load_holdout_photos(store: Store, views: list[Camera]) -> dict[str, np.ndarray]:
    """The held-out photos the training stage saved (``holdout/<image name>.png``), by camera name."""
    from io import BytesIO

    from PIL import Image

    photos = {}
    for view in views:
        if not view.held_out:
            continue
        for key in (f"{HOLDOUT}/{view.name}.png", f"{HOLDOUT}/{Path(view.name).with_suffix('.png').as_posix()}"):
            if store.exists(key):
                with Image.open(BytesIO(store.read_bytes(key))) as img:
                    photos[view.name] = np.asarray(img.convert("RGB"), np.float32) / 255.0
                break
    return photos


def run_compress(ctx: StageContext) -> StageOutput:
    options: CompressOptions = ctx.options
    t0 = time.perf_counter()
    progress = ctx.progress
    progress.update(0.0, "compress: reading the PLY")
    scene, ply_size, dropped, key = read_scene(ctx.input, ctx.scratch)
    if dropped:
        ctx.warn(f"{ctx.input.uri_of(key)}: dropped {dropped} splat(s) with NaN or infinite values")
    original = scene
    scene = keep_bands(scene, options.sh_bands)
    georef = read_georef(ctx.input)
    extra = {"spaceport": {"georef": georef}} if georef else None
    read_s = time.perf_counter() - t0

    streamed = wants_streamed(options, scene.count)
    encode_progress = progress.span(0.05, 0.5 if streamed else 0.8)
    encoded = encode_scene(scene, options, extra=extra, progress=lambda f, m: encode_progress.update(f, m))
    out = ctx.scratch / "out"
    sog_bytes = write_formats(out, options, encoded)
    metrics = size_metrics(scene, encoded, ply_size, len(sog_bytes), dropped)
    if "sog" in options.formats:
        metrics["sceneFormat"] = "sog"
    if streamed:
        metrics.update(write_streamed_format(out, options, scene, extra, progress.span(0.5, 0.8), encoded.durations))
    if georef:
        metrics["georef"] = georef

    t = time.perf_counter()
    metrics.update(measure_quality(ctx, options, original, encoded))
    durations = {k: round(v, 3) for k, v in encoded.durations.items()}
    durations.update(readSeconds=round(read_s, 3), qualitySeconds=round(time.perf_counter() - t, 3))

    progress.update(0.95, "compress: uploading")
    # meta.json last in each folder: a reader that sees it finds every texture it names; lod-meta.json after
    # every chunk's meta.json
    files = sorted((p for p in out.rglob("*") if p.is_file()),
                   key=lambda p: (p.name == OUT.lod_meta, p.name == META, str(p)))
    for path in files:
        ctx.output.upload_file(path, path.relative_to(out).as_posix())
    shutil.rmtree(out, ignore_errors=True)
    durations["totalSeconds"] = round(time.perf_counter() - t0, 3)
    metrics["durations"] = durations
    outputs = {}
    if "sog" in options.formats:
        outputs["sog"] = ctx.output.uri_of(OUT.sog)
    if "sog-unbundled" in options.formats:
        outputs["sogUnbundled"] = ctx.output.uri_of(f"{OUT.sog_unbundled}/{OUT.meta}")
    if encoded.v1_files is not None:
        outputs["sogsV1"] = ctx.output.uri_of(f"{OUT.sogs_v1}/{OUT.meta}")
    if streamed:
        outputs["sogStreamed"] = ctx.output.uri_of(f"{OUT.streamed}/{OUT.lod_meta}")
    # The viewer page beside scene.sog is the registry's publish step (COMPRESS.publish), which frames the scene
    # by its splat centres.
    return StageOutput(metrics=COMPRESS.metrics.model_validate(metrics), outputs=outputs,
                       handoff={"means": original.means})


def write_formats(out: Path, options: CompressOptions, encoded: Encoded) -> bytes:
    """Each format asked for, into the scratch folder ``out``; returns the bundled .sog's bytes."""
    out.mkdir()
    sog_bytes = bundle(encoded.sog_files)
    if "sog" in options.formats:
        (out / OUT.sog).write_bytes(sog_bytes)
    if "sog-unbundled" in options.formats:
        (out / OUT.sog_unbundled).mkdir()
        for name, data in encoded.sog_files.items():
            (out / OUT.sog_unbundled / name).write_bytes(data)
    if encoded.v1_files is not None:
        (out / OUT.sogs_v1).mkdir()
        for name, data in encoded.v1_files.items():
            (out / OUT.sogs_v1 / name).write_bytes(data)
    return sog_bytes


def write_streamed_format(out: Path, options: CompressOptions, scene: GaussianScene, extra: dict[str, Any] | None,
                          progress: ProgressReporter, durations: dict[str, float]) -> dict[str, Any]:
    """The streamed SOG into ``out/lod``; returns its metrics (``durations`` gains its steps)."""
    from spaceport.stages.compress.decimate import auto_levels, lod_levels
    from spaceport.stages.compress.streamed import write_streamed

    t = time.perf_counter()
    progress.update(0.0, "streamed SOG: levels of detail")
    levels = lod_levels(scene, options.lod_levels or auto_levels(scene.count))
    durations["decimateSeconds"] = time.perf_counter() - t
    t = time.perf_counter()
    result = write_streamed(levels, options, out / OUT.streamed, device=resolve_device(options.device), extra=extra,
                            progress=lambda f, m: progress.update(f, m))
    durations["streamedSeconds"] = time.perf_counter() - t
    return {"sceneFormat": "sog-streamed", "streamedBytes": result.bytes, "lodCounts": result.counts,
            "lodChunks": result.units, "lodLeaves": result.leaves}


def size_metrics(scene: GaussianScene, encoded: Encoded, ply_size: int, sog_size: int,
                 dropped: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "splats": scene.count,
        "droppedNonFinite": dropped,
        "shBands": scene.sh_degree,
        "plyBytes": ply_size,
        "sogBytes": sog_size,
        "compressionRatio": round(ply_size / sog_size, 3),
        "sogFileBytes": {name: len(data) for name, data in encoded.sog_files.items()},
        "ordering": encoded.ordering,
        "orderingBytes": encoded.sizes_by_ordering,
    }
    if encoded.palette is not None:
        metrics.update(shPaletteSize=encoded.palette.size, shPaletteColourError=round(encoded.palette.colour_error, 5),
                       shPaletteTried=[list(t) for t in encoded.palette.tried])
    if encoded.v1_files is not None:
        metrics["sogsV1Bytes"] = sum(len(d) for d in encoded.v1_files.values())
        metrics["sogsV1Splats"] = json.loads(encoded.v1_files[META])["means"]["shape"][0]
    return metrics


def measure_quality(ctx: StageContext, options: CompressOptions, original: GaussianScene,
                    encoded: Encoded) -> dict[str, Any]:
    """Renders of the compressed scene against the uncompressed one's (and the held-out photos), on the cameras
    training left; none without them (the stage warns)."""
    views = load_views(ctx.input) if options.quality_views else []
    if views:
        from spaceport.stages.compress import quality

        views = quality.pick_views(views, options.quality_views)
    if not views:
        if options.quality_views:
            ctx.warn(f"{ctx.input.uri_of(CAMERAS)} missing: psnrDropDb not measured")
        return {}
    qprog = ctx.progress.span(0.8, 0.95)
    decoded, _ = decode_v2(encoded.sog_files)
    truth = load_holdout_photos(ctx.input, views)
    report = quality.compare(original, decoded, views, max_side=options.quality_max_side,
                             device=resolve_device(options.device), truth=truth,
                             progress=lambda f: qprog.update(f, "compress: quality renders"))
    metrics: dict[str, Any] = dict(psnrVsUncompressedDb=round(report.psnr_db, 3),
                                   ssimVsUncompressed=round(report.ssim, 5), qualityViews=report.views,
                                   qualityRenderer=report.renderer)
    if report.psnr_drop_db is not None:
        # PSNR against the held-out photos: uncompressed minus compressed (lower is better)
        metrics.update(psnrDropDb=round(report.psnr_drop_db, 3), psnrDropViews=report.truth_views)
    else:
        ctx.warn(f"no held-out photos under {ctx.input.uri_of(HOLDOUT)}: psnrDropDb not measured")
    return metrics

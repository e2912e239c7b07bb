"""`spaceport run`: the three stages in one process, on one machine, with the same stage code as the Jobs.

Layout under the output folder: the same as under a Reconstruction's output URI (``spaceport.layout``)::

    runs/<n>/run.json          the options of this run and their key
    runs/<n>/<stage>/          one folder per stage

A run whose options key matches an existing folder continues there (finished stages are skipped);
changed options start the next number. A stage whose result.json was made from other inputs (the
photos changed, or an upstream stage was rerun) is never reused: the run starts again in the next
number. Nothing of an earlier run is overwritten.

Every file is written atomically and a stage's result.json is written last, so an interrupted run
(Ctrl-C) leaves whole files and no result.json for the stage it stopped in: the same command resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spaceport.api import COMPRESS, SFM, STAGES, TRAIN, TrainOptions
from spaceport.api.presets import DEFAULT_PRESET, PRESETS, apply_preset
from spaceport.api.stages import RUN_FILE, RUNS_DIR
from spaceport.contract import (
    BadInputError,
    ProgressListener,
    ProgressRecord,
    StagePart,
    StageResult,
    StaleOutputError,
)
from spaceport.layout import merge_metrics, options_run_key, run_folder, run_numbers
from spaceport.stages.runner import parse_options, read_result, run_stage
from spaceport.storage import StorageError, Store, open_store


@dataclass
class LocalRun:
    number: int
    store: Store
    key: str
    options: dict[str, dict[str, Any]]
    results: dict[str, StageResult] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    """Stages finished by an earlier invocation (their result.json was already there)."""
    root: Store | None = None
    """The output folder holding runs/."""
    replaced: list[str] = field(default_factory=list)
    """Why earlier run folders with these options were left behind (their results were made from other inputs)."""

    def stage_store(self, stage: str) -> Store:
        return self.store.child(stage)


def resolve_options(config: dict[str, Any] | None, preset: str | None = None) -> dict[str, dict[str, Any]]:
    """Validated per-stage options (camelCase JSON), with the preset's defaults under explicit fields.

    The preset is ``preset`` (the command line), else the config's top-level ``preset``, else standard.
    """
    config = dict(config or {})
    chosen = preset or config.pop("preset", None) or DEFAULT_PRESET
    config.pop("preset", None)
    if chosen not in PRESETS:
        raise BadInputError(f"preset: unknown preset {chosen!r}; use one of {', '.join(PRESETS)}")
    unknown = set(config) - set(STAGES)
    if unknown:
        raise BadInputError(f"config: unknown section(s) {', '.join(sorted(unknown))}; use preset, "
                            f"{', '.join(STAGES)}")
    return {s: apply_preset(parse_options(s, config.get(s)), chosen, s).to_wire() for s in STAGES}


def _run_numbers(out: Store) -> list[int]:
    return run_numbers(out.folders(RUNS_DIR))


def open_run(out: Store, options: dict[str, dict[str, Any]]) -> LocalRun:
    """Continue the latest run with the same options, or start the next numbered one."""
    key = options_run_key(options)
    numbers = _run_numbers(out)
    for n in reversed(numbers):
        store = out.child(run_folder(n))
        if store.exists(RUN_FILE) and json.loads(store.read_text(RUN_FILE)).get("key") == key:
            return LocalRun(n, store, key, options, root=out)
    return _new_run(out, key, options, numbers)


def _new_run(out: Store, key: str, options: dict[str, dict[str, Any]], numbers: list[int],
             replaces: int | None = None) -> LocalRun:
    n = (numbers[-1] + 1) if numbers else 1
    store = out.child(run_folder(n))
    record: dict[str, Any] = {"key": key, "options": options}
    if replaces is not None:
        record["replaces"] = replaces
    store.write_text(RUN_FILE, json.dumps(record, indent=1), overwrite=False)
    return LocalRun(n, store, key, options, root=out)


def restart_run(run: LocalRun, why: str) -> LocalRun:
    """The next numbered run with the same options, for a run whose stored results were made from other inputs."""
    if run.root is None:
        raise BadInputError(why)
    fresh = _new_run(run.root, run.key, run.options, _run_numbers(run.root), replaces=run.number)
    fresh.replaced = [*run.replaced, f"run {run.number}: {why}"]
    return fresh


StageListener = Callable[[str, ProgressRecord], None]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def check_photos(photos: str | Path) -> Store:
    """The photo store; a local folder must exist and hold images (S3 prefixes are checked by the sfm stage)."""
    store = open_store(photos)
    path = store.local_path()
    if path is None:
        return store
    if not path.exists():
        raise BadInputError(f"photos folder {path} does not exist")
    if not path.is_dir():
        raise BadInputError(f"photos {path} is not a folder")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*") if p.is_file()):
        raise BadInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in photos folder {path}")
    return store


def check_output(out: str | Path) -> Store:
    """The output store; a local folder is created and must be writable before any work starts."""
    store = open_store(out)
    path = store.local_path()
    if path is None:
        return store
    try:
        path.mkdir(parents=True, exist_ok=True)
        store.write_text(".spaceport-write-test", "")
        path.joinpath(".spaceport-write-test").unlink()
    except (OSError, StorageError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise BadInputError(f"output folder {path} is not writable: {reason}") from e
    return store


def check_apart(photos: Store, out: Store) -> None:
    """The output may not lie inside the photos (as the CRD's rule says for output.uri and input.uri): the next run
    would read the outputs' images as photos, and the photo listing (part of SfM's fingerprint) would change."""
    a, b = photos.uri.rstrip("/") + "/", out.uri.rstrip("/") + "/"
    if b.startswith(a):
        raise BadInputError(f"--out {out.uri} lies inside the photos folder {photos.uri}: the next run would read "
                            "its own outputs as photos; choose an output folder outside it")


def prepare_run(photos: str | Path, out: str | Path, config: dict[str, Any] | None = None,
                preset: str | None = None) -> tuple[Store, LocalRun]:
    """Check everything a run needs before any work: options, photos, output folder; open the run folder."""
    options = resolve_options(config, preset)
    photo_store = check_photos(photos)
    check_apart(photo_store, open_store(out))
    run = open_run(check_output(out), options)
    return photo_store, run


def run_pipeline(
    photos: str | Path | Store,
    out: str | Path | LocalRun,
    config: dict[str, Any] | None = None,
    *,
    preset: str | None = None,
    listener: StageListener | None = None,
    on_stage_start: Callable[[str], None] | None = None,
    on_stage_done: Callable[[str, StageResult], None] | None = None,
) -> LocalRun:
    """Run sfm → train → compress for ``photos`` into ``out``; returns the run with every result.

    ``photos`` and ``out`` may also be what :func:`prepare_run` returned.
    """
    if isinstance(out, LocalRun) and isinstance(photos, Store):
        source, run = photos, out
    else:
        source, run = prepare_run(photos, out, config, preset)  # type: ignore[arg-type]
    while True:
        try:
            _run_stages(source, run, listener, on_stage_start, on_stage_done)
            break
        except StaleOutputError as e:
            if len(run.replaced) >= 1:  # a fresh folder cannot hold stale results: something else is wrong
                raise
            logging.getLogger("spaceport.run").warning("starting a new run folder: %s", e)
            run = restart_run(run, str(e))
    finish_viewer(run)
    return run


def _run_stages(source: Store, run: LocalRun, listener: StageListener | None,
                on_stage_start: Callable[[str], None] | None,
                on_stage_done: Callable[[str, StageResult], None] | None) -> None:
    previous = source
    run.results.clear()
    run.skipped.clear()
    for stage in STAGES:
        stage_out = run.stage_store(stage)
        if read_result(stage_out) is not None:
            run.skipped.add(stage)
        elif on_stage_start:
            on_stage_start(stage)
        stage_listener = (lambda rec, s=stage: listener(s, rec)) if listener else None
        blocks = _block_count(run, stage)
        if blocks > 1:
            result = run_blocks(previous, stage_out, run.options[stage], blocks, stage_listener)
        else:
            result = run_stage(stage, previous, stage_out, run.options[stage], listener=stage_listener)
        run.results[stage] = result
        if on_stage_done:
            on_stage_done(stage, result)
        previous = stage_out


def _block_count(run: LocalRun, stage: str) -> int:
    """Training's blocks, from its options and the SfM model's registered photos (1: one training)."""
    if stage != TRAIN.name or SFM.name not in run.results:
        return 1
    registered = int(run.results[SFM.name].metrics.get("registeredImages") or 0)
    return TrainOptions.model_validate(run.options[stage]).block_count(registered)


BLOCKS_SHARE = 0.9
"""Of training's progress in a partitioned run: the blocks (one after another); the merge takes the rest."""


def run_blocks(sfm: Store, train: Store, options: dict[str, Any], blocks: int,
               listener: ProgressListener | None) -> StageResult:
    """Partitioned training on this machine: the blocks one after another, then their merge, with the code and
    the folders of the cluster's Indexed Job and merge Job. A merge already done for these inputs is kept."""

    def scaled(start: float, width: float, label: str) -> ProgressListener | None:
        if listener is None:
            return None
        return lambda rec: listener(rec.model_copy(update={"fraction": start + width * rec.fraction,
                                                           "message": f"{label}: {rec.message}"}))

    merge = StagePart(blocks)
    if read_result(train) is None:
        for index in range(blocks):
            run_stage(TRAIN.name, sfm, train, options, part=StagePart(blocks, index),
                      listener=scaled(BLOCKS_SHARE * index / blocks, BLOCKS_SHARE / blocks,
                                      f"block {index + 1} of {blocks}"))
    return run_stage(TRAIN.name, sfm, train, options, part=merge,
                     listener=scaled(BLOCKS_SHARE, 1 - BLOCKS_SHARE, "merge"))


def run_metrics(run: LocalRun) -> dict[str, Any]:
    """All stages' metrics in one dict (the earlier stage wins a shared key: ``layout.merge_metrics``)."""
    return merge_metrics(run.results[s].metrics for s in STAGES if s in run.results)


def finish_viewer(run: LocalRun) -> None:
    """Make sure the compress folder has a viewer page showing the whole run's metrics.

    The compress stage writes the page; this adds it for outputs of a compress stage that did not
    (and is harmless when the viewer's assets are missing: the run's result stays usable).
    """
    from spaceport.viewer import ViewerAssetsNotFound, scene_file, update_metrics, write_viewer

    compress = run.stage_store(COMPRESS.name)
    durations = {s: r.duration_seconds for s, r in run.results.items()}
    scene = scene_file(compress)
    if scene is not None and not compress.exists(COMPRESS.files.viewer):
        train = run.stage_store(TRAIN.name)
        means = None
        if train.exists(TRAIN.files.ply):  # places the viewer's orbit point on the scene
            from spaceport.splats import PlyFormatError, read_ply

            with contextlib.suppress(PlyFormatError, StorageError):
                means = read_ply(train.read_bytes(TRAIN.files.ply)).means
        try:
            write_viewer(compress, scene, source=train, means=means, metrics=run_metrics(run),
                         durations=durations)
        except ViewerAssetsNotFound as e:
            logging.getLogger("spaceport.run").warning("no viewer page: %s", e)
    update_metrics(compress, run_metrics(run), durations)

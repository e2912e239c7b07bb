"""Runs one stage under the contract: options, context, result.json. Used by Jobs and `spaceport run`."""

from __future__ import annotations

import importlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from spaceport.api import STAGES, CompressOptions, SfmOptions, TrainOptions, describe_validation_error
from spaceport.contract import (
    PROGRESS_FILE,
    RESULT_FILE,
    BadInputError,
    ProgressListener,
    ProgressRecord,
    ProgressReporter,
    RetryableError,
    StageContext,
    StageError,
    StageFunction,
    StageResult,
    now_iso,
)
from spaceport.storage import NotFoundError, StorageError, Store, UnsafeKeyError, UnwritableError, open_store

STAGE_FUNCTIONS: dict[str, str] = {
    "sfm": "spaceport.stages.sfm:run_sfm",
    "train": "spaceport.stages.train:run_train",
    "compress": "spaceport.stages.compress:run_compress",
}
OPTION_TYPES: dict[str, type[BaseModel]] = {
    "sfm": SfmOptions,
    "train": TrainOptions,
    "compress": CompressOptions,
}

log = logging.getLogger("spaceport.stage")


def parse_options(stage: str, config: dict[str, Any] | str | None) -> Any:
    """Validate a stage's config (a dict, a JSON string or a path to a JSON/YAML file)."""
    if stage not in OPTION_TYPES:
        raise BadInputError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    data: Any = config or {}
    if isinstance(config, str):
        text = config
        if not config.lstrip().startswith("{"):
            path = Path(config)
            if not path.is_file():
                raise BadInputError(f"config file {config} does not exist")
            text = path.read_text()
        try:
            import yaml

            data = yaml.safe_load(text) or {}
        except Exception as e:
            raise BadInputError(f"config is neither JSON nor YAML: {e}") from e
    try:
        return OPTION_TYPES[stage].model_validate(data)
    except ValidationError as e:
        raise BadInputError(f"invalid {stage} config: {describe_validation_error(e, stage)}") from e


def stage_function(stage: str) -> StageFunction:
    module_name, _, attr = STAGE_FUNCTIONS[stage].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def read_result(output: Store) -> StageResult | None:
    """The stage's result if it already completed in this output folder."""
    if not output.exists(RESULT_FILE):
        return None
    try:
        return StageResult.model_validate_json(output.read_bytes(RESULT_FILE))
    except ValueError:
        return None


def run_stage(
    stage: str,
    input: str | Store,
    output: str | Store,
    config: dict[str, Any] | str | None = None,
    *,
    listener: ProgressListener | None = None,
    scratch_dir: str | Path | None = None,
) -> StageResult:
    """Run ``stage`` once. A completed stage (result.json present) is not run again.

    Raises :class:`StageError`; storage failures are mapped to bad input (missing or forbidden
    things) or retryable errors (anything else).
    """
    options = parse_options(stage, config)
    in_store = input if isinstance(input, Store) else open_store(input)
    out_store = output if isinstance(output, Store) else open_store(output)
    try:
        done = read_result(out_store)
    except StorageError as e:
        raise _classify(e, "output") from e
    if done is not None:
        log.info("%s already complete in %s; not run again", stage, out_store.uri)
        return done
    started, t0 = now_iso(), time.monotonic()
    try:  # the first progress.json doubles as a check that the output is writable, before any work
        out_store.write_text(PROGRESS_FILE, ProgressRecord(fraction=0.0, message=f"{stage}: starting",
                                                           updated=started).to_json())
    except StorageError as e:
        raise _classify(e, "output") from e
    progress = ProgressReporter(out_store, listener)
    try:
        progress.update(0.0, f"{stage}: starting", force=True)
        with tempfile.TemporaryDirectory(prefix=f"spaceport-{stage}-", dir=scratch_dir) as tmp:
            ctx = StageContext(stage, in_store, out_store, options, progress, Path(tmp),
                               logging.getLogger(f"spaceport.stages.{stage}"))
            produced = stage_function(stage)(ctx)
        result = StageResult(
            stage=stage,
            started_at=started,
            finished_at=now_iso(),
            duration_seconds=round(time.monotonic() - t0, 3),
            metrics=produced.metrics,
            outputs=produced.outputs,
            warnings=ctx.warnings,
        )
        progress.update(1.0, f"{stage}: done", force=True)
        out_store.write_text(RESULT_FILE, json.dumps(result.model_dump(by_alias=True, exclude_none=True),
                                                     indent=1), overwrite=False)
        return result
    except StageError:
        raise
    except StorageError as e:
        raise _classify(e, stage) from e
    except MemoryError as e:
        raise RetryableError(f"{stage}: out of memory; lower the image size or Gaussian cap") from e


def _classify(err: StorageError, where: str) -> StageError:
    if isinstance(err, (NotFoundError, UnsafeKeyError, UnwritableError)) or "denied" in str(err):
        return BadInputError(f"{where}: {err}")
    return RetryableError(f"{where}: {err}")

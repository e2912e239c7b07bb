"""Runs one stage under the contract: options, context, result.json. Used by Jobs and `spaceport run`."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from spaceport.api import PIPELINE, TRAIN, describe_validation_error
from spaceport.api.stage_metrics import StageMetrics
from spaceport.api.stages import ATTEMPT_FILE, PROGRESS_FILE, RESULT_FILE, RUNS_DIR, AnyStage
from spaceport.api.stages import stage as stage_spec
from spaceport.contract import (
    BadInputError,
    ProgressListener,
    ProgressRecord,
    ProgressReporter,
    RetryableError,
    StageContext,
    StageError,
    StageFunction,
    StagePart,
    StageResult,
    StaleOutputError,
    claim_owner,
    now_iso,
    resolve,
)
from spaceport.layout import run_numbers
from spaceport.storage import NotFoundError, StorageError, Store, UnsafeKeyError, UnwritableError, open_store

STAGE_FUNCTIONS: dict[str, str] = {s.name: s.function for s in PIPELINE}
"""The registry's entry points, by stage: tests put their own stand-ins here."""

log = logging.getLogger("spaceport.stage")


def known_stage(stage: str) -> AnyStage:
    try:
        return stage_spec(stage)
    except ValueError as e:
        raise BadInputError(str(e)) from e


def parse_options(stage: str, config: dict[str, Any] | str | None) -> Any:
    """Validate a stage's config (a dict, a JSON string or a path to a JSON/YAML file)."""
    spec = known_stage(stage)
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
        return spec.options.model_validate(data)
    except ValidationError as e:
        raise BadInputError(f"invalid {stage} config: {describe_validation_error(e, stage)}") from e


def stage_function(stage: str) -> StageFunction:
    return resolve(STAGE_FUNCTIONS[stage])


def read_result(output: Store) -> StageResult | None:
    """The stage's result if it already completed in this output folder (for whichever inputs: see
    :func:`fingerprint` and :func:`check_output` before reusing it)."""
    if not output.exists(RESULT_FILE):
        return None
    try:
        return StageResult.model_validate_json(output.read_bytes(RESULT_FILE))
    except ValueError:
        return None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(stage: str, options: BaseModel, input: Store,
                part: StagePart | None = None) -> tuple[str, dict[str, str]]:
    """What a stage's result depends on: its effective options and what it reads (and, for partitioned training,
    which part it is).

    Upstream is the previous stage's result.json (its bytes: a rerun upstream stage makes new files even
    with equal options) or, for the first stage, the photo listing (names and sizes).
    """
    wire = options.model_dump(mode="json", by_alias=True, exclude_none=True)
    parts = {"options": _digest(json.dumps(wire, sort_keys=True).encode())}
    if input.exists(RESULT_FILE):
        parts["upstream"] = _digest(input.read_bytes(RESULT_FILE))
    else:
        parts["upstream"] = _digest(json.dumps(input.list_sizes(), sort_keys=True).encode())
    if part is not None:
        parts["part"] = _digest(json.dumps([part.blocks, part.block]).encode())
    whole = _digest(json.dumps({"stage": stage, **parts}, sort_keys=True).encode())
    return whole, parts


def _differs(parts: dict[str, str], stored: dict[str, str]) -> str:
    names = {"options": "options", "upstream": "input (upstream result or photos)"}
    changed = [names.get(k, k) for k in sorted(parts.keys() | stored.keys()) if parts.get(k) != stored.get(k)]
    return " and ".join(changed) or "inputs (written by an older spaceport, without a fingerprint)"


def check_output(stage: str, out: Store, wanted: str, parts: dict[str, str]) -> StageResult | None:
    """The stored result when it was made from these inputs; None when the folder is fresh (or holds an
    unfinished attempt at the same inputs). Raises :class:`StaleOutputError` for anything made otherwise."""
    done = read_result(out)
    if done is not None:
        if done.fingerprint == wanted:
            return done
        other = _differs(parts, done.fingerprint_parts)
        raise StaleOutputError(
            f"output {out.uri} already holds a {stage} result.json made from other {other}"
            f" (fingerprint {done.fingerprint or 'none'}, these inputs give {wanted}); it is kept: "
            "write to a fresh output folder")
    if out.exists(ATTEMPT_FILE):
        try:
            started = json.loads(out.read_bytes(ATTEMPT_FILE))
        except ValueError:
            started = {}
        if started.get("fingerprint") != wanted:
            raise StaleOutputError(
                f"output {out.uri} holds an unfinished {stage} attempt at other "
                f"{_differs(parts, started.get('parts') or {})} (attempt.json); its files are kept: write to a "
                "fresh output folder")
    return None


def check_blocks(stage: str, options: BaseModel, input: Store, output: Store, part: StagePart) -> None:
    """Before a merge: every block trained, each from this input with these options (its fingerprint), so that
    a merged result never joins blocks made from something else. Raises :class:`BadInputError` naming them."""
    missing, other = [], []
    try:
        for index in range(part.blocks):
            done = read_result(output.child(TRAIN.files.block(index)))
            if done is None:
                missing.append(index)
            elif done.fingerprint != fingerprint(stage, options, input, StagePart(part.blocks, index))[0]:
                other.append(index)
    except StorageError as e:
        raise _classify(e, "output") from e
    where = output.uri_of(TRAIN.files.blocks)
    if missing:
        raise BadInputError(f"cannot merge {part.blocks} blocks: block(s) {', '.join(map(str, missing))} have no "
                            f"result.json under {where}; train them first (--blocks {part.blocks} --block N)")
    if other:
        raise BadInputError(f"cannot merge {part.blocks} blocks: block(s) {', '.join(map(str, other))} under {where} "
                            "were trained from another SfM model or other options; train them again")


def run_stage(
    stage: str,
    input: str | Store,
    output: str | Store,
    config: dict[str, Any] | str | None = None,
    *,
    listener: ProgressListener | None = None,
    scratch_dir: str | Path | None = None,
    part: StagePart | None = None,
) -> StageResult:
    """Run ``stage`` once. A stage completed for the same inputs (result.json with an equal fingerprint) is not
    run again; one completed (or begun) for other inputs raises :class:`StaleOutputError` (exit 2) and is kept.

    ``part``: one block of partitioned training, written into ``blocks/<index>/`` under ``output``, or their
    merge, written into ``output`` (the training stage only).

    Raises :class:`StageError`; storage failures are mapped to bad input (missing or forbidden
    things) or retryable errors (anything else).
    """
    options = parse_options(stage, config)
    if part is not None and stage != TRAIN.name:
        raise BadInputError(f"--blocks: only the {TRAIN.name} stage is trained in blocks, not {stage}")
    in_store = input if isinstance(input, Store) else open_store(input)
    out_store = output if isinstance(output, Store) else open_store(output)
    if part is not None and part.block is not None:
        out_store = out_store.child(TRAIN.files.block(part.block))
    try:
        wanted, parts = fingerprint(stage, options, in_store, part)
    except StorageError as e:
        raise _classify(e, "input") from e
    try:
        done = check_output(stage, out_store, wanted, parts)
    except StorageError as e:
        raise _classify(e, "output") from e
    if done is not None:
        log.info("%s already complete in %s for these inputs; not run again", stage, out_store.uri)
        return done
    if part is not None and part.merge:
        check_blocks(stage, options, in_store, out_store, part)
    started, t0 = now_iso(), time.monotonic()
    try:  # the first progress.json doubles as a check that the output is writable, before any work
        out_store.write_text(PROGRESS_FILE, ProgressRecord(fraction=0.0, message=f"{stage}: starting",
                                                           updated=started).to_json())
        if not out_store.exists(ATTEMPT_FILE):
            out_store.write_text(ATTEMPT_FILE, json.dumps({"fingerprint": wanted, "parts": parts, "started": started}),
                                 overwrite=False)
    except StorageError as e:
        raise _classify(e, "output") from e
    progress = ProgressReporter(out_store, listener)
    try:
        progress.update(0.0, f"{stage}: starting", force=True)
        with tempfile.TemporaryDirectory(prefix=f"spaceport-{stage}-", dir=scratch_dir) as tmp:
            ctx = StageContext(stage, in_store, out_store, options, progress, Path(tmp),
                               logging.getLogger(f"spaceport.stages.{stage}"), part=part)
            produced = stage_function(stage)(ctx)
            metrics = _metrics(stage, produced.metrics)
            publish = stage_spec(stage).publish
            outputs = {**produced.outputs, **(resolve(publish)(ctx, produced, metrics) if publish else {})}
        result = StageResult(
            stage=stage,
            started_at=started,
            finished_at=now_iso(),
            duration_seconds=round(time.monotonic() - t0, 3),
            metrics=metrics,
            outputs=outputs,
            warnings=ctx.warnings,
            fingerprint=wanted,
            fingerprint_parts=parts,
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


def _metrics(stage: str, produced: StageMetrics | dict[str, Any]) -> dict[str, Any]:
    """The stage's metrics through its registry model: wrong types fail here, not in whoever reads them."""
    spec = stage_spec(stage)
    if isinstance(produced, StageMetrics) and not isinstance(produced, spec.metrics):
        raise StageError(f"{stage} returned {type(produced).__name__}, not {spec.metrics.__name__}")
    try:
        metrics = spec.parse_metrics(produced)
    except ValidationError as e:
        raise StageError(f"{stage} reported invalid metrics: {describe_validation_error(e, 'metrics')}") from e
    if metrics.unknown:
        log.warning("%s reported metrics its model (%s) does not name: %s", stage, spec.metrics.__name__,
                    ", ".join(metrics.unknown))
    return metrics.to_wire()


def check_owner(root_uri: str, owner: str) -> None:
    """Claim (or check) the Reconstruction's output root for ``owner`` (JSON: namespace, name, uid) before any work.

    The operator does the same at the start of a run where it can read the output (S3); on volumes, which it does
    not mount, this is the only check. Raises :class:`OutputInUseError` (exit 2) for another owner's output.
    """
    try:
        who = json.loads(owner)
        claim_owner(open_store(root_uri), str(who["namespace"]), str(who["name"]), str(who["uid"]))
    except (ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"SPACEPORT_OWNER {owner!r} is not an owner record: {e}") from e
    except StorageError as e:
        raise _classify(e, "output") from e


def next_free_run(root_uri: str) -> int | None:
    """One past the highest run folder under a Reconstruction's output root (``runs/<n>`` holding files): where a
    run whose folder holds other inputs' files goes on. None when the root cannot be listed."""
    try:
        return max(run_numbers(open_store(root_uri).folders(RUNS_DIR)), default=0) + 1
    except StorageError as e:
        log.warning("cannot list the run folders under %s: %s", root_uri, e)
        return None


def _classify(err: StorageError, where: str) -> StageError:
    if isinstance(err, (NotFoundError, UnsafeKeyError, UnwritableError)) or "denied" in str(err):
        return BadInputError(f"{where}: {err}")
    return RetryableError(f"{where}: {err}")

"""The stage contract: the one definition shared by the stage Jobs, the operator and `spaceport run`.

A stage is a function ``(StageContext) -> StageOutput``. The runner (``spaceport.stages.runner``)
gives it an input store, an output store, its validated options, a progress reporter and a scratch
folder, then writes ``result.json`` (and the termination message) when it returns.

Files in a stage's output folder:

``progress.json``  ``{"fraction", "message", "updated", "etaSeconds"}``, at most every few seconds.
``attempt.json``   ``{"fingerprint", "parts", "started"}``, written before any work: which inputs this folder is for.
``result.json``    :class:`StageResult`, written last: its presence means the stage is complete *for the
                   inputs its ``fingerprint`` names* (options and upstream results); the runner never
                   returns it for other inputs.

Exit codes of ``spaceport stage``: 0 success, 2 bad input (permanent, never retried), 1 otherwise.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from spaceport.api.common import ApiModel
from spaceport.api.stage_metrics import StageMetrics
from spaceport.api.stages import ATTEMPT_FILE as ATTEMPT_FILE  # the runner's files, named in the registry
from spaceport.api.stages import OWNER_FILE as OWNER_FILE
from spaceport.api.stages import PROGRESS_FILE as PROGRESS_FILE
from spaceport.api.stages import RESULT_FILE as RESULT_FILE
from spaceport.api.stages import AnyStage, FailureRecord, stage
from spaceport.storage import AlreadyExistsError, NotFoundError, Store

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096
"""Bytes Kubernetes keeps of a container's termination message."""

EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_BAD_INPUT = 2

PROGRESS_MIN_INTERVAL_S = 2.0
"""Seconds between two writes of progress.json (the operator mirrors it at most 10 s late)."""


class StageError(Exception):
    """A stage failed. ``exit_code`` tells Kubernetes whether to retry."""

    exit_code = EXIT_RETRYABLE
    reason = "StageError"


class BadInputError(StageError):
    """The input or options are wrong: retrying cannot help. The message names the field or file."""

    exit_code = EXIT_BAD_INPUT
    reason = "BadInput"


class StaleOutputError(BadInputError):
    """The output folder holds a result (or an unfinished attempt) made from other inputs: it is kept, not reused."""

    reason = "StaleOutput"


class OutputInUseError(BadInputError):
    """The output prefix belongs to another Reconstruction (its owner.json says which)."""

    reason = "OutputInUse"


class RetryableError(StageError):
    """A transient failure (storage unreachable, node lost): Kubernetes retries the Job."""

    reason = "Retryable"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_conflict(owner: Any, root_uri: str, namespace: str, name: str) -> str | None:
    """Why the output at ``root_uri``, whose owner record is ``owner``, is not (namespace, name)'s; None when it is.

    One re-created under the same namespace and name is the same owner (it continues at the next free run).
    """
    if not isinstance(owner, dict):
        owner = {}
    if (owner.get("namespace"), owner.get("name")) == (namespace, name):
        return None
    return (f"spec.output.uri: {root_uri} belongs to Reconstruction {owner.get('namespace')}/{owner.get('name')} "
            f"(uid {owner.get('uid')}, since {owner.get('created')}; {root_uri.rstrip('/')}/{OWNER_FILE}); "
            "choose another output.uri")


def read_owner(root: Store) -> dict[str, Any] | None:
    """The owner record at ``root``; None when there is none."""
    try:
        owner = json.loads(root.read_bytes(OWNER_FILE))
    except NotFoundError:
        return None
    return owner if isinstance(owner, dict) else {}


def claim_owner(root: Store, namespace: str, name: str, uid: str) -> dict[str, Any]:
    """The owner record at ``root``: read, or written for (namespace, name, uid) when there is none.

    Raises :class:`OutputInUseError` when it names another Reconstruction; the record keeps the first uid.
    """
    record = {"namespace": namespace, "name": name, "uid": uid, "created": now_iso()}
    owner = read_owner(root)
    if owner is None:
        try:
            root.write_text(OWNER_FILE, json.dumps(record, indent=1), overwrite=False)
            return record
        except AlreadyExistsError:  # claimed a moment ago by another Reconstruction
            owner = read_owner(root) or {}
    conflict = owner_conflict(owner, root.uri, namespace, name)
    if conflict is not None:
        raise OutputInUseError(conflict)
    return owner


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class ProgressRecord(_Wire):
    fraction: float = Field(ge=0, le=1)
    message: str = ""
    updated: str
    eta_seconds: float | None = None


class StageResult(_Wire):
    stage: str
    started_at: str
    finished_at: str
    duration_seconds: float
    metrics: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict, description="Name → URI of each artifact.")
    warnings: list[str] = Field(default_factory=list)
    fingerprint: str | None = Field(default=None, description="Digest of the stage, its effective options and "
                                    "the upstream results (or photo listing) it read.")
    fingerprint_parts: dict[str, str] = Field(default_factory=dict, description="The digests behind fingerprint, "
                                              "so a mismatch can say which input differs.")

    @property
    def spec(self) -> AnyStage:
        """The registry's entry for the stage that wrote this result."""
        return stage(self.stage)

    def typed_metrics(self) -> StageMetrics:
        """The metrics as the stage's own model (results of older stages read too)."""
        return self.spec.parse_metrics(self.metrics)

    def termination_message(self) -> str:
        """A compact JSON copy under Kubernetes' 4 KiB limit: warnings, then outputs, dropped first."""
        body = self.model_dump(by_alias=True, exclude_none=True)
        for drop in ("warnings", "outputs", "metrics"):
            text = json.dumps(body, separators=(",", ":"))
            if len(text.encode()) <= TERMINATION_LIMIT:
                return text
            body.pop(drop, None)
        return json.dumps(body, separators=(",", ":"))


def parse_termination(message: str, succeeded: bool) -> StageResult | FailureRecord | None:
    """A stage container's termination message: its (compact) result when it succeeded, its failure record when
    not; a failure that left plain text (a crash before the runner wrote one) becomes an ``Error`` record."""
    if succeeded:
        try:
            return StageResult.model_validate_json(message)
        except ValueError:
            return None
    try:
        data = json.loads(message)
    except ValueError:
        text = message.strip()[:1000]
        return FailureRecord(stage="", reason="", message=text) if text else None
    if not isinstance(data, dict) or not data.get("message"):
        return None
    return FailureRecord.model_validate(data)


@dataclass
class StageOutput:
    """What a stage function returns: its metrics (the stage's model from the registry, or their camelCase dict,
    which the runner validates), and URIs of what it wrote."""

    metrics: StageMetrics | dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    handoff: dict[str, Any] = field(default_factory=dict)
    """In-memory results for the stage's publish step (api/stages.py), never written (e.g. the splat centres
    the viewer frames the scene with)."""


def resolve(path: str) -> Any:
    """What a registry entry point names: ``module:attribute``, imported now (the stages' heavy dependencies load
    only where a stage runs)."""
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


ProgressListener = Callable[[ProgressRecord], None]


class ProgressReporter:
    """Reports a stage's fraction done, throttled, to progress.json and to local listeners.

    ``span(a, b)`` gives a reporter for a sub-step that maps its own 0..1 onto a..b of this one.
    """

    def __init__(
        self,
        store: Store | None,
        listener: ProgressListener | None = None,
        *,
        min_interval_s: float = PROGRESS_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store, self._listener = store, listener
        self._min_interval_s, self._clock = min_interval_s, clock
        self._started = clock()
        self._last_write = float("-inf")
        self._offset, self._scale = 0.0, 1.0
        self._root: ProgressReporter = self
        self.fraction = 0.0
        self.message = ""

    def span(self, start: float, end: float) -> ProgressReporter:
        sub = ProgressReporter.__new__(ProgressReporter)
        sub.__dict__.update(self.__dict__)
        sub._offset = self._offset + start * self._scale
        sub._scale = (end - start) * self._scale
        sub._root = self._root
        return sub

    def update(self, fraction: float, message: str = "", *, force: bool = False) -> None:
        root = self._root
        overall = min(1.0, max(root.fraction, self._offset + self._scale * min(1.0, max(0.0, fraction))))
        root.fraction, root.message = overall, message or root.message
        now = root._clock()
        elapsed = now - root._started
        eta = elapsed * (1 - overall) / overall if overall > 0.01 else None
        record = ProgressRecord(fraction=round(overall, 4), message=root.message, updated=now_iso(),
                                eta_seconds=None if eta is None else round(eta, 1))
        if root._listener:
            root._listener(record)
        if root._store is not None and (force or now - root._last_write >= root._min_interval_s):
            root._last_write = now
            try:
                root._store.write_text(PROGRESS_FILE, record.to_json())
            except Exception as e:  # progress is advisory: never fail a stage over it
                logging.getLogger("spaceport.progress").warning("cannot write progress: %s", e)


OptionsT = TypeVar("OptionsT", bound=ApiModel)


@dataclass(frozen=True)
class StagePart:
    """Partitioned training: one block of ``blocks`` (``block`` its index, 0-based), or the merge of all of them
    (``block`` None). A block writes into ``blocks/<index>/`` under the training folder; the merge into the training
    folder itself, which then holds what a single training would have written."""

    blocks: int
    block: int | None = None

    def __post_init__(self) -> None:
        if self.blocks < 2:
            raise BadInputError(f"--blocks {self.blocks}: partitioned training needs 2 blocks or more")
        if self.block is not None and not 0 <= self.block < self.blocks:
            raise BadInputError(f"block index {self.block} is outside 0..{self.blocks - 1} (--blocks {self.blocks})")

    @property
    def merge(self) -> bool:
        return self.block is None

    def describe(self) -> str:
        return f"merge of {self.blocks} blocks" if self.block is None else f"block {self.block} of {self.blocks}"


@dataclass
class StageContext(Generic[OptionsT]):
    """Everything a stage function may touch."""

    stage: str
    input: Store
    output: Store
    options: OptionsT
    progress: ProgressReporter
    scratch: Path
    log: logging.Logger
    warnings: list[str] = field(default_factory=list)
    part: StagePart | None = None
    """Partitioned training only: which block this is, or the merge (None: the whole stage)."""

    def warn(self, message: str) -> None:
        self.log.warning(message)
        self.warnings.append(message)


StageFunction = Callable[[StageContext], StageOutput]

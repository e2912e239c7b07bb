"""The stage registry: every pipeline stage's name, options, metrics, files, entry point and failure record.

The runner (``spaceport stage``), ``spaceport run``, the operator's Job builder and status, and the viewer name a
stage or one of its files only through here: a stage renamed, or a file moved, is one edit.

Run order: ``PIPELINE`` (``STAGES`` holds their names). Each stage reads the previous stage's folder (the first
reads the photos) and writes its own; the files in every stage folder (``progress.json``, ``attempt.json``,
``result.json``) are the runner's, described in ``spaceport.contract``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from spaceport.api.common import ApiModel
from spaceport.api.compress import CompressOptions
from spaceport.api.sfm import SfmOptions
from spaceport.api.stage_metrics import CompressMetrics, SfmMetrics, StageMetrics, TrainMetrics
from spaceport.api.train import TrainOptions

StageName = Literal["sfm", "train", "compress"]

PROGRESS_FILE = "progress.json"
RESULT_FILE = "result.json"
ATTEMPT_FILE = "attempt.json"
OWNER_FILE = "owner.json"
"""At the root of a Reconstruction's output: ``{"namespace", "name", "uid", "created"}`` of the one that owns it."""
RUN_FILE = "run.json"
"""In a ``spaceport run`` run folder: the options of the run and their key."""
RUNS_DIR = "runs"
"""Under an output root: one numbered folder per run (``runs/<n>/<stage>/``)."""


@dataclass(frozen=True)
class SfmFiles:
    sparse: str = "sparse"
    """The COLMAP model (``model`` files), written after the images it names."""
    model: tuple[str, ...] = ("cameras.bin", "images.bin", "points3D.bin")
    images: str = "images"
    """The undistorted photos."""
    georef: str = "georef.json"
    """Where the model's local frame sits on Earth (absent without GPS tags)."""
    photos: str = "photos.json"
    """The names of every photo the stage used, registered or not, sorted: training holds out photos by their place
    here, so a photo that fails to register does not change which others are held out."""


@dataclass(frozen=True)
class TrainFiles:
    ply: str = "splats.ply"
    cameras: str = "cameras.json"
    """The trained cameras (held-out ones marked), for renders after compression and the viewer's start view."""
    holdout: str = "holdout"
    """Held-out photos at the trained resolution (``holdout/<image name>.png``)."""
    georef: str = "georef.json"
    checkpoints: str = "checkpoints"
    blocks: str = "blocks"
    """Partitioned training: one folder per block (``blocks/<index>/``, each a training stage folder of its own:
    splats.ply, checkpoints, progress.json, result.json); the merge writes the files above beside it."""

    def block(self, index: int) -> str:
        """Block ``index``'s folder, relative to the training folder."""
        return f"{self.blocks}/{index}"


@dataclass(frozen=True)
class CompressFiles:
    sog: str = "scene.sog"
    sog_unbundled: str = "sog"
    """Folder of meta.json and its WebP textures."""
    sogs_v1: str = "sogs-v1"
    meta: str = "meta.json"
    """The manifest in ``sog_unbundled``, ``sogs_v1`` and each chunk folder of ``streamed``, written last."""
    streamed: str = "lod"
    """Folder of the streamed SOG: ``lod-meta.json`` and one unbundled SOG per chunk (``<level>_<n>/``)."""
    lod_meta: str = "lod-meta.json"
    """The streamed SOG's index in ``streamed``, written after every chunk."""
    viewer: str = "index.html"
    viewer_metrics: str = "metrics.json"
    viewer_settings: str = "settings.json"
    georef: str = "georef.json"


@dataclass(frozen=True)
class ContractOutput:
    """An overall output the file contract guarantees, used only for a stage whose result named none (a
    termination message cut to Kubernetes' 4 KiB)."""

    name: str
    file: str
    format: str | None = None
    """The compress format that makes it (None: always made)."""


OptionsT = TypeVar("OptionsT", bound=ApiModel)
MetricsT = TypeVar("MetricsT", bound=StageMetrics)
FilesT = TypeVar("FilesT")


class FailureRecord(BaseModel):
    """What a failed stage leaves as its Pod's termination message (read by the operator, at most 4 KiB)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    stage: str
    reason: str = "Error"
    """The StageError subclass's reason (BadInput, OutputInUse, Retryable...) or Stopped; empty for a message that
    was plain text (a crash before the runner could write a record)."""
    message: str = ""
    next_run: int | None = None
    """StaleOutput in a Job: the next run number free under the output root (one past the highest ``runs/<n>``
    there), where the operator starts the run again; the stage can see volumes, the operator cannot."""

    MESSAGE_LIMIT: ClassVar[int] = 3000
    """Characters of the message kept: the record stays under Kubernetes' 4 KiB with room for the rest."""

    def to_json(self) -> str:
        record: dict[str, Any] = {"stage": self.stage, "reason": self.reason,
                                  "message": self.message[:self.MESSAGE_LIMIT]}
        if self.next_run is not None:
            record["nextRun"] = self.next_run
        return json.dumps(record)

    def describe(self) -> str:
        """``Reason: message``, as status shows it."""
        return f"{self.reason}: {self.message}" if self.reason else self.message


@dataclass(frozen=True)
class StageSpec(Generic[OptionsT, MetricsT, FilesT]):
    """One stage of the pipeline."""

    name: StageName
    options: type[OptionsT]
    """Its options (the Reconstruction's section of the same name, less scheduling)."""
    metrics: type[MetricsT]
    """What its result.json reports."""
    files: FilesT
    """Names of what it writes into its folder."""
    function: str
    """``module:function`` that runs it, imported only when it runs (the operator never imports the stages)."""
    outputs: tuple[ContractOutput, ...] = ()
    publish: str | None = None
    """``module:function`` the runner calls after the stage, ``(ctx, output, metrics) -> outputs``: what is made
    from the stage's results for people rather than for the next stage (the compress stage's viewer page)."""
    renderer: str | None = None
    """``module:function`` rendering a scene from a camera, ``(scene, camera, device) -> [H, W, 3] image``, that
    the stage offers later stages (training's rasterizer, which the compress stage measures quality with)."""

    def parse_metrics(self, data: dict[str, Any] | MetricsT) -> MetricsT:
        return data if isinstance(data, self.metrics) else self.metrics.model_validate(data)

    def failure(self, reason: str, message: str, next_run: int | None = None) -> FailureRecord:
        return FailureRecord(stage=self.name, reason=reason, message=message, next_run=next_run)


SFM: StageSpec[SfmOptions, SfmMetrics, SfmFiles] = StageSpec(
    "sfm", SfmOptions, SfmMetrics, SfmFiles(), "spaceport.stages.sfm:run_sfm")
TRAIN: StageSpec[TrainOptions, TrainMetrics, TrainFiles] = StageSpec(
    "train", TrainOptions, TrainMetrics, TrainFiles(), "spaceport.stages.train:run_train",
    outputs=(ContractOutput("ply", TrainFiles.ply),), renderer="spaceport.stages.train.render:render")
COMPRESS: StageSpec[CompressOptions, CompressMetrics, CompressFiles] = StageSpec(
    "compress", CompressOptions, CompressMetrics, CompressFiles(), "spaceport.stages.compress:run_compress",
    outputs=(ContractOutput("sog", CompressFiles.sog, "sog"),), publish="spaceport.viewer.publish:publish_viewer")

AnyStage = StageSpec[Any, Any, Any]
PIPELINE: tuple[AnyStage, ...] = (SFM, TRAIN, COMPRESS)
"""The stages in the order they run."""
STAGES: tuple[StageName, ...] = tuple(s.name for s in PIPELINE)
"""Stage names in the order they run."""
FIRST: AnyStage = PIPELINE[0]
LAST: AnyStage = PIPELINE[-1]


def stage(name: str) -> AnyStage:
    """The stage called ``name``; ValueError naming the stages for any other."""
    for spec in PIPELINE:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")


def upstream(name: str) -> AnyStage | None:
    """The stage whose folder ``name`` reads; None for the first (it reads the photos)."""
    index = STAGES.index(stage(name).name)
    return PIPELINE[index - 1] if index else None


def downstream(name: str) -> AnyStage | None:
    """The stage that runs after ``name``; None after the last."""
    index = STAGES.index(stage(name).name)
    return PIPELINE[index + 1] if index + 1 < len(PIPELINE) else None

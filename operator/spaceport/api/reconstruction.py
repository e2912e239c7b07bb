"""The Reconstruction custom resource: spec and status. The CRD in crds/ is generated from here."""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from spaceport.api.common import ApiModel, StageScheduling, StatusModel
from spaceport.api.compress import CompressOptions
from spaceport.api.presets import preset_defaults
from spaceport.api.sfm import SfmOptions
from spaceport.api.stages import stage
from spaceport.api.train import TrainOptions

GROUP = "spaceport.dev"
VERSION = "v1alpha1"
KIND = "Reconstruction"
PLURAL = "reconstructions"
SINGULAR = "reconstruction"
SHORT_NAMES = ["recon"]

Preset = Literal["draft", "standard", "high"]


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def cel_rules(*rules: tuple[str, str]) -> ConfigDict:
    """CEL validation rules (rule, message) that the API server enforces before the operator sees a spec.

    They repeat the pydantic validators below, so clusters reject bad manifests at `kubectl apply`.
    """
    return ApiModel.model_config | ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}
    )


class Location(ApiModel):
    """Where photos come from or results go: ``s3://bucket/prefix`` or a path on a PersistentVolumeClaim."""

    model_config = cel_rules(
        ("self.uri.startsWith('s3://') || !self.uri.contains('://')",
         "uri: use s3://bucket/prefix or a path on a volume"),
        ("self.uri.startsWith('s3://') || has(self.volumeClaim)",
         "a path URI needs volumeClaim (the PersistentVolumeClaim it lives on)"),
        ("!self.uri.startsWith('s3://') || self.uri.matches('^s3://[^/]+')",
         "uri names no bucket"),
    )

    uri: str = Field(
        min_length=1,
        max_length=1024,
        description="s3://bucket/prefix, or a path inside volumeClaim (e.g. photos/site-42).",
    )
    volume_claim: str | None = Field(
        default=None, max_length=253, description="PersistentVolumeClaim holding the path; required for non-S3 URIs."
    )
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        description="Secret whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_ENDPOINT_URL, "
        "AWS_REGION) become the stage's environment. Never copied into status, events or logs.",
    )

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str) -> str:
        if "://" in uri and not is_s3_uri(uri):
            raise ValueError(f"unsupported scheme in {uri!r}: use s3://bucket/prefix or a path on a volume")
        if is_s3_uri(uri) and not uri[len("s3://") :].split("/", 1)[0]:
            raise ValueError(f"{uri!r} names no bucket")
        if ".." in uri.split("/"):
            raise ValueError(f"{uri!r} contains '..'")
        return uri

    @model_validator(mode="after")
    def _path_needs_volume(self) -> Location:
        if not is_s3_uri(self.uri) and not self.volume_claim:
            raise ValueError("a path URI needs volumeClaim (the PersistentVolumeClaim it lives on)")
        return self


class SecretKeyRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="Secret in the Reconstruction's namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key of the Secret holding the value.")


class Notify(ApiModel):
    """A webhook POSTed once when a run Succeeds or Fails."""

    model_config = cel_rules(
        ("self.url.startsWith('http://') || self.url.startsWith('https://')", "notify.url: use http:// or https://"),
    )

    url: str = Field(min_length=1, max_length=2048, description="http(s) URL that receives a JSON POST.")
    auth_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key whose value is sent as the Authorization header (e.g. 'Bearer ...')."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r}: use http:// or https://")
        return url


class SfmSection(SfmOptions):
    scheduling: StageScheduling = Field(default_factory=StageScheduling)


class TrainScheduling(StageScheduling):
    """Where and how the training stage's Jobs run, and how many blocks of partitioned training at once."""

    parallelism: int | None = Field(
        default=None, ge=1, le=256,
        description="Partitioned training (train.blocks): at most this many blocks train at once, one Pod and GPU "
                    "each (the Indexed Job's parallelism; Kueue admits that many). Default: every block at once.",
    )


class TrainSection(TrainOptions):
    scheduling: TrainScheduling = Field(default_factory=TrainScheduling)


class CompressSection(CompressOptions):
    scheduling: StageScheduling = Field(default_factory=StageScheduling)


_SAME_PLACE = (
    "self.input.uri.startsWith('s3://') == self.output.uri.startsWith('s3://')"
    " && (has(self.input.volumeClaim) ? self.input.volumeClaim : '')"
    " == (has(self.output.volumeClaim) ? self.output.volumeClaim : '')"
)
_SLASHED = "(self.{0}.uri.endsWith('/') ? self.{0}.uri : self.{0}.uri + '/')"


class ReconstructionSpec(ApiModel):
    """What to reconstruct, where to put it, and how each stage runs."""

    model_config = cel_rules(
        (f"!({_SAME_PLACE}) || !{_SLASHED.format('output')}.startsWith({_SLASHED.format('input')})",
         "output.uri lies inside input.uri"),
        ("!has(self.input.credentialsSecret) || !has(self.output.credentialsSecret)"
         " || self.input.credentialsSecret == self.output.credentialsSecret",
         "input.credentialsSecret and output.credentialsSecret differ: one Secret serves both"),
    )

    input: Location
    output: Location
    preset: Preset = Field(default="standard", description="Per-stage defaults; explicit fields win.")
    sfm: SfmSection = Field(default_factory=SfmSection)
    train: TrainSection = Field(default_factory=TrainSection)
    compress: CompressSection = Field(default_factory=CompressSection)
    retries: int = Field(default=2, ge=0, le=10, description="backoffLimit of each stage's Job (with partitioned "
                         "training, backoffLimitPerIndex: the retries of each block).")
    suspend: bool = Field(
        default=False,
        description="Suspend the running stage's Job; false resumes. With a queueName the stage's Job is deleted "
        "instead (Kueue owns the Jobs' suspend flag) and created again on resume, back in the queue; training "
        "resumes from its last checkpoint.",
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kueue LocalQueue of the stage Jobs (label kueue.x-k8s.io/queue-name); Jobs are created "
        "suspended and Kueue admits them. Default: the operator's SPACEPORT_DEFAULT_QUEUE_NAME; empty: no Kueue.",
    )
    notify: Notify | None = Field(default=None, description="Webhook called once when a run ends.")
    priority_class: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kueue WorkloadPriorityClass of the stage Jobs (label kueue.x-k8s.io/priority-class); "
        "used only with a queue.",
    )

    @model_validator(mode="after")
    def _check_locations(self) -> ReconstructionSpec:
        a, b = self.input, self.output
        if a.credentials_secret and b.credentials_secret and a.credentials_secret != b.credentials_secret:
            raise ValueError(
                "input.credentialsSecret and output.credentialsSecret differ: one Secret serves both"
            )
        same_place = is_s3_uri(a.uri) == is_s3_uri(b.uri) and a.volume_claim == b.volume_claim
        if same_place and _inside(b.uri, a.uri):
            raise ValueError(f"output.uri {b.uri!r} lies inside input.uri {a.uri!r}")
        return self

    def stage_options(self, name: str) -> SfmOptions | TrainOptions | CompressOptions:
        """The stage's options without its scheduling: what `spaceport stage` receives.

        Fields the spec leaves out take the preset's value (api/presets.py); explicit fields win.
        """
        section = getattr(self, name)
        explicit = section.model_dump(include=set(section.model_fields_set) - {"scheduling"})
        return stage(name).options.model_validate({**preset_defaults(self.preset, name), **explicit})



def _inside(child: str, parent: str) -> bool:
    c, p = child.rstrip("/") + "/", parent.rstrip("/") + "/"
    return c.startswith(p)


class Phase(enum.StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Reason(enum.StrEnum):
    """Machine-readable cause of the current phase (the Ready condition's reason)."""

    CREATED = "Created"
    INVALID_SPEC = "InvalidSpec"
    STAGE_RUNNING = "StageRunning"
    STAGE_FAILED = "StageFailed"
    JOB_VANISHED = "JobVanished"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"
    BAD_CREDENTIALS = "BadCredentials"
    WAITING_FOR_SECRET = "WaitingForSecret"
    COMPLETED = "Completed"
    RETRYING = "Retrying"
    OUTPUT_IN_USE = "OutputInUse"


def _free_form(description: str) -> Any:
    return Field(
        default_factory=dict,
        description=description,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class Usage(StatusModel):
    """Resources reserved: requested CPUs and GPUs times the Job's wall time (startTime to completion), retries and
    all; not measured utilisation."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cost: float | None = Field(default=None, description="Estimate from the operator's prices; absent without.")
    currency: str | None = None


class BlockStatus(StatusModel):
    """One spatial block of partitioned training: one index of the training stage's Indexed Job."""

    index: int = Field(description="The block, and its Job completion index (blocks/<index>/ in the train folder).")
    phase: Phase = Phase.PENDING
    progress: float | None = Field(default=None, description="Fraction done, 0..1, from the block's progress.json.")
    eta_seconds: float | None = None
    message: str | None = None
    failures: int = Field(default=0, description="Pods of this block that failed in the current Job; each failure "
                          "is retried alone, up to spec.retries.")


class StageStatus(StatusModel):
    job: str | None = Field(default=None, description="Name of the stage's Job, decided before it exists.")
    attempt: int | None = Field(default=None, description="Attempt of the stage: 2 and up after a retry "
                                "(annotation spaceport.dev/retry); its Job's name ends in -a<attempt>.")
    phase: Phase = Phase.PENDING
    started_at: str | None = None
    finished_at: str | None = None
    progress: float | None = Field(default=None, description="Fraction done, 0..1, from progress.json.")
    message: str | None = None
    eta_seconds: float | None = Field(default=None, description="Estimated seconds left in this stage.")
    progress_updated: str | None = None
    metrics: dict[str, Any] = _free_form("Metrics from the stage's result.json.")
    outputs: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list, description="What the stage skipped or worked around.")
    usage: Usage | None = Field(default=None, description="Set when the stage's Job finishes.")
    blocks: list[BlockStatus] = Field(
        default_factory=list,
        description="Partitioned training: one entry per spatial block (an index of the Indexed Job named in job), "
                    "their number decided from the SfM model before the Job exists; empty: not partitioned.")
    merge_job: str | None = Field(default=None, description="Partitioned training: the Job that merges the blocks "
                                  "once every block has succeeded.")


class Metrics(StatusModel):
    images: int | None = Field(default=None, description="Photos the run used (the sfm stage's imagesUsed).")
    images_found: int | None = Field(default=None, description="Files found under input.uri (imagesFound).")
    registered_images: int | None = None
    gaussians: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = Field(default=None, description="Held-out LPIPS (AlexNet; lower is better), on GPU.")
    ply_bytes: int | None = None
    sog_bytes: int | None = None
    compression_ratio: float | None = None
    psnr_drop_db: float | None = None
    durations: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")


class Condition(StatusModel):
    """A Kubernetes condition (metav1.Condition): Ready, Succeeded, Failed, Reconciling, Stalled."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = Field(default=None, description="The metadata.generation it speaks for.")
    last_transition_time: str | None = Field(default=None, description="When status last changed.")


class NotificationStatus(StatusModel):
    run: int = Field(description="Run the notification was about; a run is notified once.")
    phase: str = Field(description="Phase reported: Succeeded or Failed.")
    state: Literal["Sent", "Failed"] = "Sent"
    attempts: int = 0
    at: str | None = Field(default=None, description="When it was sent or given up.")
    last_error: str | None = None


class ReconstructionStatus(StatusModel):
    phase: Phase = Phase.PENDING
    reason: Reason | None = None
    message: str | None = None
    stage: str | None = None
    progress: float | None = Field(default=None, description="Percent of the whole run done, 0..100.")
    run: int | None = Field(default=None, description="Run number; each spec change starts a new one.")
    run_key: str | None = None
    run_uri: str | None = Field(default=None, description="Output folder of the current run.")
    stages: dict[str, StageStatus] = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=Metrics)
    outputs: dict[str, str] = Field(default_factory=dict, description="URIs of .sog, .ply and viewer.")
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    usage: Usage | None = Field(default=None, description="Sum over the run's finished stages, with a cost estimate.")
    notification: NotificationStatus | None = Field(default=None, description="The webhook call of spec.notify.")
    retry: str | None = Field(default=None, description="The value of the annotation spaceport.dev/retry last "
                              "acted on; a new value on a Failed run re-runs it from the stage that failed.")

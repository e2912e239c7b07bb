"""Pure builders: (Reconstruction, run, stage, settings) -> the stage's Job as a dict. No API calls here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spaceport.api import FIRST, GROUP, KIND, STAGES, VERSION, Location, ReconstructionSpec, is_s3_uri
from spaceport.api.stages import upstream
from spaceport.contract import EXIT_BAD_INPUT
from spaceport.controller.naming import LABEL_RECON, LABEL_RUN, LABEL_STAGE, MERGE, job_name, label_value
from spaceport.controller.settings import OperatorSettings
from spaceport.layout import join, stage_uri

CONTAINER = "stage"
INPUT_MOUNT = "/mnt/spaceport/input"
OUTPUT_MOUNT = "/mnt/spaceport/output"
SCRATCH_MOUNT = "/scratch"
RUN_AS_UID = 10001
"""The stage image's non-root user; fsGroup makes PVC outputs writable by it."""

GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class Owner:
    """The parts of the Reconstruction a Job needs: its identity, for names, labels and ownerReferences."""

    name: str
    namespace: str
    uid: str


def stage_input_location(spec: ReconstructionSpec, run: int, stage: str) -> tuple[Location, str]:
    """The spec location a stage reads from and the URI inside it: photos for the first stage, the previous
    stage's folder after."""
    before = upstream(stage)
    if before is None:
        return spec.input, spec.input.uri
    return spec.output, stage_uri(spec.output.uri, run, before.name)


def container_uri(location: Location, uri: str, mount: str) -> str:
    """What the container sees: S3 URIs unchanged, volume paths under the claim's mount point."""
    if is_s3_uri(uri):
        return uri
    return join(mount, uri.strip("/")) if uri.strip("/") else mount


def stage_io(spec: ReconstructionSpec, run: int, stage: str) -> tuple[str, str]:
    """``--input`` and ``--output`` of the stage's command."""
    in_location, in_uri = stage_input_location(spec, run, stage)
    in_mount = INPUT_MOUNT if in_location is spec.input else OUTPUT_MOUNT
    return (container_uri(in_location, in_uri, in_mount),
            container_uri(spec.output, stage_uri(spec.output.uri, run, stage), OUTPUT_MOUNT))


def job_labels(owner: Owner, run: int, stage: str) -> dict[str, str]:
    return {
        LABEL_RECON: label_value(owner.name),
        LABEL_RUN: str(run),
        LABEL_STAGE: stage,
        "app.kubernetes.io/name": "spaceport-stage",
        "app.kubernetes.io/managed-by": "spaceport",
    }


QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"


def queue_name(spec: ReconstructionSpec, settings: OperatorSettings) -> str | None:
    """The Kueue LocalQueue of the run's Jobs; None: no Kueue, Jobs start at once."""
    return spec.queue_name or settings.default_queue_name


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _gpus(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The GPU entries (``nvidia.com/gpu``, ``amd.com/gpu``...) of a requests or limits map."""
    return {k: v for k, v in (resources or {}).items() if k.endswith("/gpu") and v}


def _has_gpu(resources: Mapping[str, Any]) -> bool:
    return bool(_gpus(resources.get("limits") or {}) or _gpus(resources.get("requests") or {}))


def stage_device(spec: ReconstructionSpec, stage: str) -> str:
    """The stage's ``device`` option: auto, cpu or cuda (sfm has none: auto)."""
    return str(getattr(spec.stage_options(stage), "device", "auto"))


def placement(spec: ReconstructionSpec, stage: str,
              settings: OperatorSettings) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """Resources and pool (image, nodeSelector, tolerations) of a stage's Pod, following its ``device``.

    ``auto`` keeps the stage's own pool. ``cuda`` asks for a GPU and, when the stage's pool has none, runs in the
    pool of the first stage that has (train's by default); ``cpu`` asks for none and, when the stage's pool is a
    GPU pool, runs in the first CPU pool (sfm's by default). CPU and memory stay the stage's own.
    """
    own = _plain(settings.resources_for(stage))
    device = stage_device(spec, stage)
    if device == "auto" or (device == "cuda") == _has_gpu(own):
        return own, settings.pool_for(stage)
    order = [s for s in STAGES if s != stage]
    if device == "cuda":
        donor = next((s for s in order if _has_gpu(settings.resources_for(s))), None)
        gpus = _gpus((settings.resources_for(donor) or {}).get("limits") or {}) if donor else {GPU: 1}
        limits = {**(own.get("limits") or {}), **gpus}
        return {**own, "limits": limits}, settings.pool_for(donor) if donor else {}
    donor = next((s for s in order if not _has_gpu(settings.resources_for(s))), None)
    stripped = {part: {k: v for k, v in (own.get(part) or {}).items() if k not in _gpus(own.get(part) or {})}
                for part in ("requests", "limits") if own.get(part)}
    return stripped, settings.pool_for(donor) if donor else {}


@dataclass(frozen=True)
class Part:
    """Which of a stage's Jobs: the whole stage (``blocks`` 1), the Indexed Job of its ``blocks`` spatial blocks
    (partitioned training), or the Job that merges them (``merge``)."""

    blocks: int = 1
    merge: bool = False

    def args(self) -> list[str]:
        if self.blocks < 2:
            return []
        return ["--blocks", str(self.blocks), *(["--merge"] if self.merge else [])]

    @property
    def indexed(self) -> bool:
        return self.blocks > 1 and not self.merge


WHOLE = Part()


def build_job(owner: Owner, spec: ReconstructionSpec, run: int, stage: str,
              settings: OperatorSettings, attempt: int = 1, part: Part = WHOLE) -> dict[str, Any]:
    """The Job that runs ``stage`` of run ``run`` (or ``part`` of it). Same arguments, same dict: a restart
    rebuilds it identically."""
    scheduling = getattr(spec, stage).scheduling
    labels = job_labels(owner, run, stage)
    queue = queue_name(spec, settings)
    job_labels_all = dict(labels)
    if queue:
        job_labels_all[QUEUE_LABEL] = queue
        if spec.priority_class:
            job_labels_all[PRIORITY_LABEL] = spec.priority_class

    job_spec: dict[str, Any] = {
        "backoffLimit": spec.retries,
        "ttlSecondsAfterFinished": settings.job_ttl_seconds,
        # Kueue admits a queued Job by setting suspend to false; it must start suspended.
        "suspend": bool(queue) or spec.suspend,
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob",
                 "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": dict(labels)},
                     "spec": _pod_spec(owner, spec, run, stage, settings, part)},
    }
    if part.indexed:
        _index(job_spec, part.blocks, getattr(scheduling, "parallelism", None), spec.retries)
    if scheduling.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = scheduling.active_deadline_seconds

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(owner.name, run, stage, attempt, MERGE if part.merge else None),
            "namespace": owner.namespace,
            "labels": job_labels_all,
            "annotations": {"spaceport.dev/reconstruction-name": owner.name},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": job_spec,
    }


def _index(job_spec: dict[str, Any], blocks: int, parallelism: int | None, retries: int) -> None:
    """Make the Job an Indexed Job of ``blocks`` completions, each retried alone (backoffLimitPerIndex).

    backoffLimit is left out: with backoffLimitPerIndex it defaults to 2147483647 (a small one would end the whole
    Job on a few failures of one block). A bad input (exit 2) fails its index at once (FailIndex); the other blocks
    go on, so that a retry after fixing it redoes only that block; the Job fails once every index has ended."""
    del job_spec["backoffLimit"]
    job_spec.update(completionMode="Indexed", completions=blocks, parallelism=min(parallelism or blocks, blocks),
                    backoffLimitPerIndex=retries)
    for rule in job_spec["podFailurePolicy"]["rules"]:
        if rule["action"] == "FailJob":
            rule["action"] = "FailIndex"


def _pod_spec(owner: Owner, spec: ReconstructionSpec, run: int, stage: str,
              settings: OperatorSettings, part: Part = WHOLE) -> dict[str, Any]:
    """The stage Pod: its container, volumes and placement (nodeSelector, tolerations)."""
    scheduling = getattr(spec, stage).scheduling
    default_resources, pool = placement(spec, stage, settings)
    resources = scheduling.resources.to_wire() if scheduling.resources else default_resources
    resources = {k: v for k, v in resources.items() if v}
    tolerations = [t.to_wire() for t in scheduling.tolerations] or _plain(list(pool.get("tolerations") or []))
    if not tolerations and GPU in resources.get("limits", {}):
        # GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule; without this the Pod never schedules.
        tolerations = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    node_selector = dict(scheduling.node_selector) or dict(pool.get("nodeSelector") or {})
    volumes, mounts = _volumes(spec, stage, settings)
    container = _container(owner, spec, run, stage, settings, image=scheduling.image or pool.get("image"))
    container.update(resources=resources, volumeMounts=mounts, args=[*container["args"], *part.args()])
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # podFailurePolicy requires it
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_UID,
            "runAsGroup": RUN_AS_UID,
            "fsGroup": RUN_AS_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return pod_spec


def _container(owner: Owner, spec: ReconstructionSpec, run: int, stage: str, settings: OperatorSettings,
               image: str | None) -> dict[str, Any]:
    """The stage container: `spaceport stage` with its locations and options, locked down."""
    input_uri, output_uri = stage_io(spec, run, stage)
    config = json.dumps(spec.stage_options(stage).to_wire(), sort_keys=True, separators=(",", ":"))
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image or settings.stage_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["spaceport", "stage", stage],
        "args": ["--input", input_uri, "--output", output_uri, "--config", config],
        "env": [
            # The root filesystem is read-only: every cache and temp dir goes to the scratch volume.
            {"name": "TMPDIR", "value": SCRATCH_MOUNT},
            {"name": "HOME", "value": f"{SCRATCH_MOUNT}/home"},
            {"name": "XDG_CACHE_HOME", "value": f"{SCRATCH_MOUNT}/cache"},
            {"name": "NUMBA_CACHE_DIR", "value": f"{SCRATCH_MOUNT}/numba"},
            {"name": "TORCH_EXTENSIONS_DIR", "value": f"{SCRATCH_MOUNT}/torch_extensions"},
            {"name": "MPLCONFIGDIR", "value": f"{SCRATCH_MOUNT}/matplotlib"},
            # The stage checks (or writes) the output's owner record: on volumes the operator cannot.
            {"name": "SPACEPORT_OUTPUT_ROOT", "value": container_uri(spec.output, spec.output.uri, OUTPUT_MOUNT)},
            {"name": "SPACEPORT_OWNER", "value": json.dumps({"namespace": owner.namespace, "name": owner.name,
                                                             "uid": owner.uid}, separators=(",", ":"))},
        ],
        "resources": {},
        "volumeMounts": [],
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    secret_ref = credentials_ref(spec, settings)
    if secret_ref:
        # By reference only: the operator never copies the values anywhere.
        container["envFrom"] = [{"secretRef": secret_ref}]
    return container


def credentials_secret(spec: ReconstructionSpec, settings: OperatorSettings) -> tuple[str | None, bool]:
    """The storage Secret's name, and whether the spec named it (a default one may be absent)."""
    named = spec.input.credentials_secret or spec.output.credentials_secret
    if named:
        return named, True
    if settings.default_credentials_secret and (is_s3_uri(spec.input.uri) or is_s3_uri(spec.output.uri)):
        return settings.default_credentials_secret, False
    return None, False


def credentials_ref(spec: ReconstructionSpec, settings: OperatorSettings) -> dict[str, Any] | None:
    name, named = credentials_secret(spec, settings)
    if name is None:
        return None
    # A Secret the spec names must exist (the Pod waits for it); the operator-wide default is optional.
    return {"name": name} if named else {"name": name, "optional": True}


def _volumes(spec: ReconstructionSpec, stage: str,
             settings: OperatorSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {"sizeLimit": settings.scratch_size_limit}}]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH_MOUNT}]
    if stage == FIRST.name and not is_s3_uri(spec.input.uri):
        volumes.append({"name": "input",
                        "persistentVolumeClaim": {"claimName": spec.input.volume_claim, "readOnly": True}})
        mounts.append({"name": "input", "mountPath": INPUT_MOUNT, "readOnly": True})
    if not is_s3_uri(spec.output.uri):
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": spec.output.volume_claim}})
        mounts.append({"name": "output", "mountPath": OUTPUT_MOUNT})
    return volumes, mounts


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value

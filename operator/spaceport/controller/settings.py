"""Operator settings, read once from the environment (``SPACEPORT_*``) at start-up.

Every field says its unit and why its default is what it is; the Helm chart sets the same variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spaceport.api import COMPRESS, SFM, STAGES, TRAIN

DEFAULT_STAGE_IMAGE = "ghcr.io/spaceport-dev/spaceport-stage:0.1.0"

DEFAULT_RESOURCES: dict[str, dict[str, dict[str, str | int]]] = {
    # COLMAP feature extraction and matching are CPU-bound and hold all descriptors in memory.
    SFM.name: {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
    # 3DGS training needs one GPU; host memory holds the decoded images.
    TRAIN.name: {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi", "nvidia.com/gpu": 1}},
    # k-means over the SH palette is CPU-bound.
    COMPRESS.name: {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
}


class SettingsError(ValueError):
    """An SPACEPORT_* variable has a value the operator cannot use; the message names it."""


@dataclass(frozen=True)
class OperatorSettings:
    stage_image: str = DEFAULT_STAGE_IMAGE
    """Image of the stage Jobs when a stage's ``scheduling.image`` is empty (SPACEPORT_STAGE_IMAGE)."""

    image_pull_policy: str = "IfNotPresent"
    """Pull policy of stage containers (SPACEPORT_IMAGE_PULL_POLICY)."""

    default_resources: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: DEFAULT_RESOURCES)
    """Per-stage requests/limits when ``scheduling.resources`` is empty (SPACEPORT_DEFAULT_RESOURCES, a JSON
    object ``{"train": {"limits": {...}}}`` whose stages replace the built-in ones)."""

    stage_pools: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-stage ``image``, ``nodeSelector`` and ``tolerations`` used where a Reconstruction's scheduling leaves
    them empty (SPACEPORT_STAGE_POOLS, a JSON object keyed by stage; the chart's ``stages`` values)."""

    default_credentials_secret: str | None = None
    """Secret (in the Reconstruction's namespace) for S3 Reconstructions that name none
    (SPACEPORT_DEFAULT_CREDENTIALS_SECRET). Mounted as optional: without it stages use their own AWS env."""

    metrics_port: int | None = None
    """Port of the Prometheus /metrics endpoint (SPACEPORT_METRICS_PORT); unset: no endpoint."""

    job_ttl_seconds: int = 24 * 3600
    """Seconds a finished Job (and its Pod logs) stays before Kubernetes deletes it
    (SPACEPORT_JOB_TTL_SECONDS). A day leaves time to read logs; results live in storage anyway."""

    progress_interval_s: float = 5.0
    """Seconds between two looks at a running stage's progress.json and Job (SPACEPORT_PROGRESS_INTERVAL_S).
    Status is at most this stale plus the stage's own 2 s write throttle, so it must stay <= 8."""

    scratch_size_limit: str = "100Gi"
    """sizeLimit of the emptyDir scratch volume (SPACEPORT_SCRATCH_SIZE_LIMIT): undistorted images, checkpoints."""

    namespace: str | None = None
    """Namespace to watch when the command line names none (SPACEPORT_NAMESPACE); empty: all namespaces."""

    max_workers: int = 16
    """Threads running reconcile passes, which block on the Kubernetes client (SPACEPORT_MAX_WORKERS). A burst of
    new Reconstructions waits on these, so keep it above the expected burst's per-second rate."""

    secret_cache_s: float = 60.0
    """Seconds the storage credentials read for progress polling are kept in memory (SPACEPORT_SECRET_CACHE_S)."""

    health_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    """kopf's liveness endpoint for the Pod's probes (SPACEPORT_HEALTH_ENDPOINT; "none" disables it)."""

    default_queue_name: str | None = None
    """Kueue LocalQueue for Reconstructions that name none (SPACEPORT_DEFAULT_QUEUE_NAME); unset: Jobs start at
    once, without Kueue. The chart's ``kueue.defaultQueueName``."""

    notify_attempts: int = 6
    """POSTs of a spec.notify webhook before giving up (SPACEPORT_NOTIFY_ATTEMPTS)."""

    notify_backoff_s: float = 2.0
    """Seconds before the first webhook retry, doubling after each (SPACEPORT_NOTIFY_BACKOFF_S): 6 attempts span
    about a minute."""

    price_cpu_hour: float | None = None
    """Price of one requested CPU core for an hour (SPACEPORT_PRICE_CPU_HOUR), for status.usage.cost; unset with
    the GPU price: no cost estimate."""

    price_gpu_hour: float | None = None
    """Price of one GPU for an hour (SPACEPORT_PRICE_GPU_HOUR)."""

    price_currency: str = "USD"
    """Currency of the prices, copied into status.usage (SPACEPORT_PRICE_CURRENCY)."""

    def resources_for(self, stage: str) -> Mapping[str, Any]:
        return self.default_resources.get(stage, {})

    def pool_for(self, stage: str) -> Mapping[str, Any]:
        return self.stage_pools.get(stage, {})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        if env.get("SPACEPORT_STAGE_IMAGE"):
            kw["stage_image"] = env["SPACEPORT_STAGE_IMAGE"]
        if env.get("SPACEPORT_IMAGE_PULL_POLICY"):
            policy = env["SPACEPORT_IMAGE_PULL_POLICY"]
            if policy not in ("Always", "IfNotPresent", "Never"):
                raise SettingsError(f"SPACEPORT_IMAGE_PULL_POLICY={policy!r}: use Always, IfNotPresent or Never")
            kw["image_pull_policy"] = policy
        if env.get("SPACEPORT_DEFAULT_RESOURCES"):
            kw["default_resources"] = {**DEFAULT_RESOURCES, **_stage_json(env, "SPACEPORT_DEFAULT_RESOURCES")}
        if env.get("SPACEPORT_STAGE_POOLS"):
            kw["stage_pools"] = _stage_json(env, "SPACEPORT_STAGE_POOLS")
        if env.get("SPACEPORT_DEFAULT_CREDENTIALS_SECRET"):
            kw["default_credentials_secret"] = env["SPACEPORT_DEFAULT_CREDENTIALS_SECRET"]
        kw.update(_number(env, "SPACEPORT_METRICS_PORT", "metrics_port", int, 1, 65535))
        kw.update(_number(env, "SPACEPORT_JOB_TTL_SECONDS", "job_ttl_seconds", int, 0))
        kw.update(_number(env, "SPACEPORT_PROGRESS_INTERVAL_S", "progress_interval_s", float, 0.05, 8.0))
        kw.update(_number(env, "SPACEPORT_MAX_WORKERS", "max_workers", int, 1))
        kw.update(_number(env, "SPACEPORT_SECRET_CACHE_S", "secret_cache_s", float, 0))
        if env.get("SPACEPORT_SCRATCH_SIZE_LIMIT"):
            kw["scratch_size_limit"] = env["SPACEPORT_SCRATCH_SIZE_LIMIT"]
        if env.get("SPACEPORT_HEALTH_ENDPOINT"):
            endpoint = env["SPACEPORT_HEALTH_ENDPOINT"]
            kw["health_endpoint"] = None if endpoint.lower() == "none" else endpoint
        kw.update(_number(env, "SPACEPORT_NOTIFY_ATTEMPTS", "notify_attempts", int, 1, 100))
        kw.update(_number(env, "SPACEPORT_NOTIFY_BACKOFF_S", "notify_backoff_s", float, 0))
        kw.update(_number(env, "SPACEPORT_PRICE_CPU_HOUR", "price_cpu_hour", float, 0))
        kw.update(_number(env, "SPACEPORT_PRICE_GPU_HOUR", "price_gpu_hour", float, 0))
        if env.get("SPACEPORT_PRICE_CURRENCY"):
            kw["price_currency"] = env["SPACEPORT_PRICE_CURRENCY"]
        if env.get("SPACEPORT_DEFAULT_QUEUE_NAME"):
            kw["default_queue_name"] = env["SPACEPORT_DEFAULT_QUEUE_NAME"]
        if env.get("SPACEPORT_NAMESPACE"):
            kw["namespace"] = env["SPACEPORT_NAMESPACE"]
        return cls(**kw)


def _stage_json(env: Mapping[str, str], var: str) -> dict[str, Any]:
    try:
        value = json.loads(env[var])
    except ValueError as e:
        raise SettingsError(f"{var} is not JSON: {e}") from e
    if not isinstance(value, dict) or not set(value) <= set(STAGES) \
            or not all(isinstance(v, dict) for v in value.values()):
        raise SettingsError(f"{var}: expected an object keyed by {', '.join(STAGES)}")
    return value


def _number(env: Mapping[str, str], var: str, attr: str, kind: type, low: float,
            high: float | None = None) -> dict[str, Any]:
    if not env.get(var):
        return {}
    try:
        value = kind(env[var])
    except ValueError as e:
        raise SettingsError(f"{var}={env[var]!r} is not a {kind.__name__}") from e
    if value < low or (high is not None and value > high):
        raise SettingsError(f"{var}={value} is outside {low}..{high if high is not None else 'inf'}")
    return {attr: value}

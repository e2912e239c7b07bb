"""The run layout: where a run's files live, what identifies a run, and how its stages add up. Shared by the
operator, `spaceport run` and the viewer.

Under an output (a Reconstruction's ``spec.output.uri``, or `spaceport run --out`)::

    owner.json                 who owns the output (operator runs; see contract.claim_owner)
    runs/<n>/run.json          `spaceport run`: the options of the run and their key
    runs/<n>/<stage>/          each stage's folder; api/stages.py names the files in it

A run is identified by a key, a digest of everything that changes its results: on the cluster the spec less
scheduling, suspension, queueing, retries and notification (:func:`spec_run_key`), locally the resolved options
of the three stages (:func:`options_run_key`). A new key starts the next run number; an equal one continues.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic.alias_generators import to_camel

from spaceport.api import COMPRESS, SFM, STAGES, TRAIN, ReconstructionSpec
from spaceport.api.stages import RUNS_DIR

PROGRESS_WEIGHTS: dict[str, float] = {SFM.name: 0.2, TRAIN.name: 0.6, COMPRESS.name: 0.2}
"""Share of the whole run each stage takes, for overall progress (status and the console); training dominates."""

SPEC_FIELDS_KEPT_OUT = frozenset({"suspend", "retries", "queue_name", "priority_class", "notify"})
"""Spec fields that do not change results: toggling them keeps the run (so does any stage's scheduling)."""


LATER_OPTIONS: dict[str, dict[str, Any]] = {
    SFM.name: {"feature_budget": 8_000_000},
    TRAIN.name: {"sky": "auto", "vignetting": False, "directional_light": False, "max_elongation": 0.0, "blocks": 0,
                 "block_max_images": 1000, "block_overlap": 0.25},
    COMPRESS.name: {"streamed": "auto", "streamed_min_splats": 1_000_000, "lod_levels": 0, "lod_chunk_splats": 524_288,
                    "lod_chunk_extent": 16.0, "lod_chunk_min_splats": 8192},
}
"""Stage options (Python names) added after run keys were first written, with their defaults: left out of a key
while at the default, so that a Reconstruction made before they existed keeps its key (and its finished run) after
an upgrade instead of starting over; set to anything else, they change the key as every option does."""


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _without_later_defaults(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for stage, python_defaults in LATER_OPTIONS.items():
        defaults = {**python_defaults, **{to_camel(k): v for k, v in python_defaults.items()}}  # either spelling
        if isinstance(out.get(stage), Mapping):
            out[stage] = {k: v for k, v in out[stage].items() if not (k in defaults and v == defaults[k])}
    return out


def spec_run_key(spec: ReconstructionSpec) -> str:
    """A Reconstruction's run key: a new value starts a new run folder."""
    data = spec.model_dump(mode="json", exclude=set(SPEC_FIELDS_KEPT_OUT))
    for name in STAGES:
        data[name].pop("scheduling", None)
    return digest(_without_later_defaults(data))


def options_run_key(options: Mapping[str, Mapping[str, Any]]) -> str:
    """A `spaceport run`'s key: its per-stage options (camelCase JSON, preset applied)."""
    return digest(_without_later_defaults(dict(options)))


def join(*parts: str) -> str:
    """URI or path parts joined by single slashes (the head keeps its scheme and leading slash)."""
    head, *rest = parts
    return "/".join([head.rstrip("/"), *(p.strip("/") for p in rest if p.strip("/"))])


def run_folder(run: int) -> str:
    """A run's folder, relative to the output: ``runs/<n>``."""
    return f"{RUNS_DIR}/{run}"


def run_uri(output: str, run: int) -> str:
    """Where run ``run`` writes under ``output`` (an s3:// URI or a path)."""
    return join(output, run_folder(run))


def stage_uri(output: str, run: int, stage: str) -> str:
    return join(run_uri(output, run), stage)


def run_numbers(folders: Iterable[str]) -> list[int]:
    """The run numbers among the names of the folders under ``runs/``, ascending."""
    return sorted({int(name) for name in folders if name.isdigit()})


def merge_metrics(per_stage: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """All stages' metrics (camelCase, in run order) in one dict. On a shared key the earlier stage wins: the
    scene's own quality is training's, not what compression measured against it."""
    merged: dict[str, Any] = {}
    for metrics in per_stage:
        for key, value in metrics.items():
            if value is not None:
                merged.setdefault(key, value)
    return merged


def overall_fraction(fractions: Mapping[str, float]) -> float:
    """The whole run's fraction done (0..1) from each stage's (missing stages count as not started)."""
    return sum(PROGRESS_WEIGHTS[name] * min(1.0, max(0.0, fractions.get(name, 0.0))) for name in STAGES)

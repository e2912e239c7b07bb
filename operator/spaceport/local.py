"""`spaceport run`: the three stages in one process, on one machine, with the same stage code as the Jobs.

Layout under the output folder (the same as under a Reconstruction's output URI)::

    runs/<n>/run.json          the options of this run and their key
    runs/<n>/sfm|train|compress/

A run whose options key matches an existing folder continues there (finished stages are skipped);
changed options start the next number. Nothing of an earlier run is overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spaceport.api import STAGES
from spaceport.contract import ProgressRecord, StageResult
from spaceport.stages.runner import parse_options, run_stage
from spaceport.storage import LocalStore, Store, open_store

RUN_FILE = "run.json"


@dataclass
class LocalRun:
    number: int
    store: Store
    key: str
    options: dict[str, dict[str, Any]]
    results: dict[str, StageResult] = field(default_factory=dict)

    def stage_store(self, stage: str) -> Store:
        return self.store.child(stage)


def options_key(options: dict[str, dict[str, Any]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


def resolve_options(config: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Validated per-stage options (camelCase JSON), defaults filled in."""
    config = config or {}
    unknown = set(config) - set(STAGES)
    if unknown:
        from spaceport.contract import BadInputError

        raise BadInputError(f"config: unknown section(s) {', '.join(sorted(unknown))}; use {', '.join(STAGES)}")
    return {s: parse_options(s, config.get(s)).to_wire() for s in STAGES}


def open_run(out: Store, options: dict[str, dict[str, Any]]) -> LocalRun:
    """Continue the run with the same options, or start the next numbered one."""
    key = options_key(options)
    numbers = sorted({int(top) for top in (k.split("/", 1)[0] for k in out.list("runs")) if top.isdigit()})
    for n in numbers:
        store = out.child(f"runs/{n}")
        if store.exists(RUN_FILE) and json.loads(store.read_text(RUN_FILE)).get("key") == key:
            return LocalRun(n, store, key, options)
    n = (numbers[-1] + 1) if numbers else 1
    store = out.child(f"runs/{n}")
    store.write_text(RUN_FILE, json.dumps({"key": key, "options": options}, indent=1), overwrite=False)
    return LocalRun(n, store, key, options)


StageListener = Callable[[str, ProgressRecord], None]


def run_pipeline(
    photos: str | Path,
    out: str | Path,
    config: dict[str, Any] | None = None,
    *,
    listener: StageListener | None = None,
    on_stage_done: Callable[[str, StageResult], None] | None = None,
) -> LocalRun:
    """Run sfm → train → compress for ``photos`` into ``out``; returns the run with every result."""
    out_store = open_store(out)
    if isinstance(out_store, LocalStore):
        out_store.local_path().mkdir(parents=True, exist_ok=True)
    run = open_run(out_store, resolve_options(config))
    previous: Store = open_store(photos)
    for stage in STAGES:
        stage_out = run.stage_store(stage)
        stage_listener = (lambda rec, s=stage: listener(s, rec)) if listener else None
        result = run_stage(stage, previous, stage_out, run.options[stage], listener=stage_listener)
        run.results[stage] = result
        if on_stage_done:
            on_stage_done(stage, result)
        previous = stage_out
    return run

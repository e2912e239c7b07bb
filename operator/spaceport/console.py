"""Terminal front end of `spaceport run`: rich progress bars per stage and overall, and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from spaceport.api import STAGES
from spaceport.contract import ProgressRecord, StageResult
from spaceport.local import LocalRun, run_pipeline

STAGE_WEIGHTS = {"sfm": 0.25, "train": 0.6, "compress": 0.15}
"""Share of the whole run each stage takes, roughly, for the overall bar."""


def run_with_progress(photos: str | Path, out: str | Path, config: dict[str, Any] | None,
                      console: Console | None = None) -> LocalRun:
    console = console or Console(stderr=True)
    columns = (TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[message]}"))
    with Progress(*columns, console=console, transient=False) as bars:
        overall = bars.add_task("overall", total=1.0, message="")
        tasks: dict[str, TaskID] = {s: bars.add_task(s, total=1.0, message="") for s in STAGES}

        def on_progress(stage: str, rec: ProgressRecord) -> None:
            bars.update(tasks[stage], completed=rec.fraction, message=rec.message[:60])
            before = sum(STAGE_WEIGHTS[s] for s in STAGES[: STAGES.index(stage)])
            bars.update(overall, completed=before + STAGE_WEIGHTS[stage] * rec.fraction)

        def on_done(stage: str, result: StageResult) -> None:
            bars.update(tasks[stage], completed=1.0, message=f"done in {result.duration_seconds:.1f} s")

        run = run_pipeline(photos, out, config, listener=on_progress, on_stage_done=on_done)
        bars.update(overall, completed=1.0)
    console.print(summary_table(run))
    return run


def summary_table(run: LocalRun) -> Table:
    table = Table(title=f"run {run.number}: {run.store.uri}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("metrics")
    for stage, result in run.results.items():
        shown = ", ".join(f"{k}={v}" for k, v in result.metrics.items() if not isinstance(v, (dict, list)))
        table.add_row(stage, f"{result.duration_seconds:.1f}", shown)
    return table

"""Terminal front end of `spaceport run`: rich progress bars per stage and overall, and a summary."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from spaceport.api import COMPRESS, STAGES
from spaceport.contract import ProgressRecord, StageResult
from spaceport.layout import overall_fraction
from spaceport.local import LocalRun, prepare_run, run_metrics, run_pipeline

SUMMARY_ROWS: list[tuple[str, tuple[str, ...], str]] = [
    # label, metric keys (first present wins; the names of status.metrics), format
    ("Registered images", ("registeredImages",), "registered"),
    ("Gaussians", ("gaussians",), "count"),
    ("PSNR", ("psnr",), "psnr"),
    ("SSIM", ("ssim",), "ratio3"),
    ("LPIPS", ("lpips",), "ratio3"),
    ("PSNR drop after compression", ("psnrDropDb",), "db"),
    ("PLY size", ("plyBytes",), "bytes"),
    ("SOG size", ("sogBytes",), "bytes"),
    ("Compression ratio", ("compressionRatio",), "times"),
]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def format_metric(value: Any, kind: str, metrics: dict[str, Any]) -> str:
    """One value of the summary table as the user reads it (``kind``: a SUMMARY_ROWS format)."""
    if kind == "registered":
        total = metrics.get("imagesUsed", metrics.get("images"))
        return f"{int(value):,} / {int(total):,}" if total is not None else f"{int(value):,}"
    if kind == "count":
        return f"{int(value):,}"
    if kind == "db":  # a drop of -0.002 dB (compression within noise) reads 0.00, not -0.00
        return f"{round(float(value), 2) + 0.0:.2f} dB"
    if kind == "psnr":
        where = {"heldOut": " (held-out views)", "train": " (training views)"}.get(metrics.get("evalViews"), "")
        return f"{float(value):.2f} dB{where}"
    if kind == "ratio3":
        return f"{float(value):.3f}"
    if kind == "bytes":
        return human_bytes(float(value))
    if kind == "times":
        return f"{float(value):.1f}x"
    return str(value)


def run_with_progress(photos: str | Path, out: str | Path, config: dict[str, Any] | None,
                      console: Console | None = None, *, preset: str | None = None) -> LocalRun:
    console = console or Console(stderr=True)
    columns = (TextColumn("{task.description:<8}"), BarColumn(bar_width=24), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(compact=True),
               TextColumn("{task.fields[message]}"))
    photo_store, prepared = prepare_run(photos, out, config, preset)  # bad input fails before any bar is drawn
    with Progress(*columns, console=console, transient=False) as bars, _log_above(console):
        overall = bars.add_task("overall", total=1.0, message="")
        tasks: dict[str, TaskID] = {s: bars.add_task(s, total=1.0, message="waiting", start=False) for s in STAGES}

        def overall_at(stage: str, fraction: float) -> float:
            done = {s: 1.0 for s in STAGES[: STAGES.index(stage)]}
            return overall_fraction({**done, stage: fraction})

        started: set[str] = set()

        def on_start(stage: str) -> None:
            started.add(stage)
            bars.start_task(tasks[stage])
            bars.update(tasks[stage], message="starting")

        def on_progress(stage: str, rec: ProgressRecord) -> None:
            bars.update(tasks[stage], completed=rec.fraction, message=rec.message[:60])
            bars.update(overall, completed=overall_at(stage, rec.fraction), message=stage)

        def on_done(stage: str, result: StageResult) -> None:
            done_now = stage in started  # run_pipeline starts only the stages it runs
            message = f"done in {result.duration_seconds:.1f} s" if done_now else "done earlier: skipped"
            bars.start_task(tasks[stage])
            bars.update(tasks[stage], completed=1.0, message=message)
            bars.update(overall, completed=overall_at(stage, 1.0))

        run = run_pipeline(photo_store, prepared, listener=on_progress, on_stage_start=on_start,
                           on_stage_done=on_done)
        bars.update(overall, completed=1.0, message="done")
    console.print(summary_table(run))
    return run


@contextlib.contextmanager
def _log_above(console: Console) -> Iterator[None]:
    """Route log records through rich while the bars are live, so they print above them, not through them."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [RichHandler(console=console, show_path=False, show_time=False)]
    try:
        yield
    finally:
        root.handlers = saved


def summary_table(run: LocalRun) -> Table:
    """The end-of-run summary: quality, sizes, durations, and where the result is."""
    metrics = run_metrics(run)
    table = Table(title=f"Spaceport run {run.number}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for label, keys, kind in SUMMARY_ROWS:
        key = next((k for k in keys if metrics.get(k) is not None), None)
        if key is not None:
            table.add_row(label, format_metric(metrics[key], kind, metrics))
    total = 0.0
    for stage, result in run.results.items():
        note = " (done earlier, skipped)" if stage in run.skipped else ""
        table.add_row(f"{stage} time", f"{result.duration_seconds:.1f} s{note}")
        total += 0 if stage in run.skipped else result.duration_seconds
    table.add_row("Total time (this invocation)", f"{total:.1f} s")
    compress, files = run.stage_store(COMPRESS.name), COMPRESS.files
    table.add_row("Run folder", run.store.uri)
    if compress.exists(files.sog):
        table.add_row("Scene", compress.uri_of(files.sog))
    streamed = f"{files.streamed}/{files.lod_meta}"
    if compress.exists(streamed):
        table.add_row("Streamed scene", compress.uri_of(streamed))
    if compress.exists(files.viewer):
        table.add_row("Viewer", compress.uri_of(files.viewer))
        local = compress.local_path()
        if local is not None:
            table.add_row("Look at it", f"spaceport view {local}")
    return table

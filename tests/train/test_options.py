"""Training options whose defaults depend on other options."""

from __future__ import annotations

from spaceport.api import TrainOptions


def test_densification_schedule_scales_with_short_runs() -> None:
    # 3DGS's own schedule for long runs: from step 500, every 100 steps, until half of the run
    assert TrainOptions(iterations=30_000).densify_schedule() == (500, 15_000, 100)
    # a short run still densifies from early on, often enough to matter
    assert TrainOptions(iterations=800).densify_schedule() == (80, 400, 16)
    assert TrainOptions(iterations=100).densify_schedule() == (10, 50, 10)
    explicit = TrainOptions(iterations=800, densify_from=5, densify_until=700, densify_every=7)
    assert explicit.densify_schedule() == (5, 700, 7)

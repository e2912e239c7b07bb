"""Prometheus metrics of the operator (served on SPACEPORT_METRICS_PORT at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("spaceport_reconciles_total", "Reconcile passes, by outcome.", ["outcome"])
RECONCILE_SECONDS = Histogram("spaceport_reconcile_seconds", "Seconds one reconcile pass took.",
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
JOBS_CREATED = Counter("spaceport_jobs_created_total", "Stage Jobs created (adoptions of existing ones excluded).",
                       ["stage"])
TRANSITIONS = Counter("spaceport_stage_transitions_total", "Stage phase changes written to status.",
                      ["stage", "phase"])

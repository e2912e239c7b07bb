"""Deterministic child names: the same Reconstruction, run and stage always give the same Job name."""

from __future__ import annotations

import hashlib

MAX_NAME = 63
"""Job names become the ``job-name`` label of their Pods, and label values stop at 63 characters."""

LABEL_RECON = "spaceport.dev/reconstruction"
LABEL_RUN = "spaceport.dev/run"
LABEL_STAGE = "spaceport.dev/stage"
RETRY_ANNOTATION = "spaceport.dev/retry"
"""Set to any new value on a Failed Reconstruction: its run goes on from the stage that failed."""


MERGE = "merge"
"""The part of partitioned training that merges the blocks: its Job is ``<recon>-r<n>-train-merge``."""


def job_name(recon: str, run: int, stage: str, attempt: int = 1, part: str | None = None) -> str:
    """``<recon>-r<n>-<stage>`` (``-<part>`` for a stage's second Job, the merge of partitioned training; ``-a<k>``
    for the k-th attempt that a retry asked for); when too long, the Reconstruction's name is cut and a hash keeps
    it unique."""
    tail = f"r{run}-{stage}" + (f"-{part}" if part else "") + (f"-a{attempt}" if attempt > 1 else "")
    full = f"{recon}-{tail}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    suffix = f"-{digest}-{tail}"
    return recon[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def label_value(value: str) -> str:
    """A label value: at most 63 characters, hashed when longer (Reconstruction names may reach 253)."""
    if len(value) <= MAX_NAME:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return value[: MAX_NAME - 9].rstrip("-._") + "-" + digest

"""Options of the compression stage (PlayCanvas SOG / SOGS)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spaceport.api.common import ApiModel

SogFormat = Literal["sog", "sog-unbundled", "sogs-v1"]
Ordering = Literal["auto", "plas", "morton"]


class CompressOptions(ApiModel):
    """How the trained PLY becomes web formats."""

    formats: list[SogFormat] = Field(default_factory=lambda: ["sog", "sog-unbundled"], min_length=1)
    ordering: Ordering = "morton"
    sh_bands: int = Field(default=3, ge=0, le=3, description="Spherical-harmonics bands kept (0 drops all).")
    kmeans_iterations: int = Field(default=10, ge=1, le=100)
    seed: int = 0

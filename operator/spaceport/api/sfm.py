"""Options of the SfM stage (pycolmap). The stage and the CRD both read this model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spaceport.api.common import ApiModel

MatchingMode = Literal["auto", "sequential", "spatial", "exhaustive"]
MapperKind = Literal["incremental", "global"]


class SfmOptions(ApiModel):
    """How photos become cameras and a sparse point cloud."""

    matching: MatchingMode = Field(
        default="auto",
        description="auto: spatial with GPS tags, sequential for ordered flights, exhaustive for small sets.",
    )
    mapper: MapperKind = "incremental"
    max_image_size: int = Field(
        default=1600, ge=64, le=16384, description="Longest side, in pixels, of images used for SfM/training."
    )
    min_registered_fraction: float = Field(
        default=0.5, gt=0, le=1, description="Fail when fewer of the usable images register."
    )
